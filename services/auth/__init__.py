"""Bearer tokens: one organisation and a set of scopes each, stored hashed."""

from services.auth.tokens import SCOPES, Principal, TokenStore

__all__ = ["SCOPES", "Principal", "TokenStore"]
