"""Tenants, tiers and quotas, API keys, usage, and the tenant scoping mechanism (SPEC 3, 7)."""
