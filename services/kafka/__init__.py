"""Kafka plumbing shared by the services: client settings and topic administration."""
