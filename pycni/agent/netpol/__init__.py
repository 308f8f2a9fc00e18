"""NetworkPolicy on the node: the model (objects, model), the kernel side (program), and the
agent's loop (controller). See docs/networkpolicy.md."""
