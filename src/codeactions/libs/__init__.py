"""The libraries user code can import."""
