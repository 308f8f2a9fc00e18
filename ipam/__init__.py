"""IPAM plugins."""
