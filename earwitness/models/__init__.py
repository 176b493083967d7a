"""Shipped model files (weights, thresholds, model card)."""
