"""REST API (FastAPI) over the inference engine."""
