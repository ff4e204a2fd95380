"""What the outside world relies on: topics, message schemas, HTTP models.

Imports nothing internal.
"""
