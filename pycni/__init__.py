"""pycni: CNI plugins in Python."""
