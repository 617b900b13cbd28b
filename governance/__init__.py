"""Roles and object permissions, the hash-chained audit log, compliance exports (SPEC 8)."""
