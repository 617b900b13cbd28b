"""The platform core: what every app builds on and nothing in it builds on an app.

API base pieces (errors, pagination, parsers, schema helpers), settings access, the
request context, metrics, safe task sending and the realtime send side. Below the
tenants layer and above only the kernel (ARCHITECTURE "Layers").
"""
