"""The no-op job of bench/peers.py and bench/latency.py, one module per system that runs it."""
