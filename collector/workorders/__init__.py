"""Maintenance work orders: pure rules (rules.py) and their SQLite store (store.py)."""
