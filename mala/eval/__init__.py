"""Evaluation of anomaly maps and image scores."""
