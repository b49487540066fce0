"""Projects and permissions tests."""
