"""`okrstream demo`: a believable organisation, seeded through the public API."""
