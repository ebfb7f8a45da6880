"""Telemetry out of the engine: Prometheus text and the live server (trio)."""
