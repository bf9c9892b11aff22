"""Simulated facility equipment served over real protocols on loopback, with injectable faults."""
