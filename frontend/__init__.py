"""The operator and reviewer dashboard, and its live WebSocket channel (SPEC 11)."""
