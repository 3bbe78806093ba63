"""Feature cache, head training, fine-tuning, early stopping and model comparison."""
