"""twin-collector: receives agent summaries, stores them, keeps the fleet twin, raises work orders."""
