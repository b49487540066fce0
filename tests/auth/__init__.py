"""Authentication tests."""
