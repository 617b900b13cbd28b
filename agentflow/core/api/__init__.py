"""Shared API machinery: the contract every endpoint follows (SPEC 5)."""
