"""Benchmarks: the figures that say how fast and how big kitap is on this machine (`make bench`)."""
