"""Contracts shared by every pupilflow process: events, decisions, policy models, settings, errors.

This package imports nothing else of ours; producers, streams and sinks depend on it and on nothing else.
"""
