"""The one front door: command, ingest and query routes on OKR_HTTP_PORT."""
