"""Emulation and test machinery: namespaces, emulated nodes and clusters, the runtime side of
CNI (a small libcni), the demo, the kernel lane."""
