"""Backends: model names, health classification, inventory and the registry that owns their state."""
