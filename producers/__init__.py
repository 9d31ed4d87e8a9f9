"""Connectors that turn what school systems produce into pupilflow events, and the Kafka emitter they share."""
