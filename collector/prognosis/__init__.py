"""Prognosis: a health indicator normalised to each machine's own healthy baseline, and its remaining life.

Pure functions, arrays in and dataclasses out: `health_indicator` (the baseline and the indicator),
`remaining_life` (forecast of the indicator to the failure level, with an interval). The work-order
rule that runs them on the collector's history is collector/workorders/prognosis.py.
"""
