"""Code CRUD."""
