"""Entry point for `python -m ollamaproxy`."""

from ollamaproxy.cli import main

raise SystemExit(main())
