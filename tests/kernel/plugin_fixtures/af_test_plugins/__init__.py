"""Test plugins for the kernel's PluginManager."""
