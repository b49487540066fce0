"""Live channel tests."""
