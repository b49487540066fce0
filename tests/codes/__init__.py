"""Code CRUD tests."""
