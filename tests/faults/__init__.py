"""Fault drills against real PostgreSQL, Redis and S3 processes."""
