"""Tamper evidence: verify every stream's hash chain and the log's seals, export an
objective's history as stored."""
