"""Run logs: stored in the database by default, in S3 when configured."""
