"""What every HTTP service shares: problem+json errors, auth dependencies, limits."""
