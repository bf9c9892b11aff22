"""Maintenance work orders.

rules.py         shared pieces (Finding, RuleBase, state machines) and the threshold rule
rate.py          rate of change over a window
vibration.py     ISO 10816/20816 zone and bearing diagnosis over consecutive blocks
trend.py         Theil-Sen trend forecast: preventive work orders before a limit is reached
data_quality.py  stale points, BAD data, offline agents
evaluate.py      [[rules]] parsing and dispatch of observations to rules (shared by ingest and what-if)
history.py       indicator history in the state database, bounded by resolution and retention
store.py         work orders and their events; lifecycle open -> acknowledged -> closed
"""
