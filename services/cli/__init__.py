"""The `okrstream` command line."""
