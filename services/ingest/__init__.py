"""Readings ingest: POST /v1/readings into the event store (the outbox)."""
