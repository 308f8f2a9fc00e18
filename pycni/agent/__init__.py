"""The long-lived node agent: the Kubernetes client, config and overlay reconciliation."""
