"""Run log read tests."""
