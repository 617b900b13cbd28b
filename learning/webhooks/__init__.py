"""Signed inbound webhooks (SPEC 10): providers' signature schemes, endpoints, deliveries."""
