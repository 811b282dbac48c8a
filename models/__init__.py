"""Features, training, evaluation, model registry and synthetic data."""
