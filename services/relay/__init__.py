"""The outbox relay: the event store's notification log, published in order to Kafka."""
