"""Code library list tests."""
