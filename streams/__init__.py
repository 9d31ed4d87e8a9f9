"""The stream processor: faust wiring around the pure policy evaluator and per-subject state."""
