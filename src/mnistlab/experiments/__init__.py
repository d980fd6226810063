"""Experiments: the classic course runs as named recipes, the fast path, the runner."""
