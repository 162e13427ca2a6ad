"""Shared infrastructure every layer may use: one-line user errors, the name registry, the strict
config-model base, atomic file writes and the datasets layer (local files or the hub).
"""
