"""Alternative execution engines for `run` (imported lazily; each is an optional extra)."""
