"""ollamaproxy: one localhost endpoint routing local AI inference across many backends."""

__version__ = "0.1.0"
