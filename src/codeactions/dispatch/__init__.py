"""Runs handed to `codeactions worker` processes over RabbitMQ, and the worker itself."""
