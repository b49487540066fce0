"""The console: the browser frontend built from `console/` by `make`, served at /console."""
