"""What the plugins share: pod attachment, node settings, peers, masquerade (per-call)."""
