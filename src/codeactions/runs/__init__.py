"""Run records, their read routes, and the execution endpoints."""
