"""Routing: which backends may serve a request (candidates) and who gets a slot when (scheduler)."""
