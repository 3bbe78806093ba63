"""One router per resource: predictions and model/health metadata."""
