"""Run records and execution endpoints."""
