"""Execution of user code in sandboxed children, kept warm for speed."""
