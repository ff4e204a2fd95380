"""Tamper evidence: verify every stream's hash chain, export an objective's history."""
