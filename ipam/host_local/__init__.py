"""host-local IPAM."""
