"""The CNI protocol and the per-call core every plugin runs on (under the start-up budget)."""
