"""heap: a Go-shaped garbage-collected heap on top of :mod:`sysmem` (arrives in its own issue)."""
