"""The query service: reads of the projection store over HTTP, live stream, dashboard."""
