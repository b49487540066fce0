"""Per-code rate limiting: in process by default, shared through Redis when configured."""
