"""Policy: the effective efficiency mode (and, later, breakers) that constrain scheduling."""
