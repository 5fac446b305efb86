"""Default pattern data of the detector's knowledge base (plain Python, no I/O)."""
