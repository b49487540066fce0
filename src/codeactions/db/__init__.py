"""Database: models, engine, request sessions and migrations."""
