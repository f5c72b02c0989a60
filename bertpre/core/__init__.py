"""Shared foundations of every stage: the one user-error type, typed configs and their strict loader,
safe file writing, seeds, where named files are found, the GLUE presets and the metrics log.
"""
