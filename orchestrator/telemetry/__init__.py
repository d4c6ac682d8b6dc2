"""Logs (structlog, configured once) and Prometheus metrics."""
