"""The agent kernel: pure async Python, no Django (checked by import-linter).

Import public names from `agentflow`; modules here are the implementation.
"""
