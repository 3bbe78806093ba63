"""pneumo: pneumonia detection on pediatric chest X-rays."""

__version__ = "0.1.0"

CLASS_NAMES = ("NORMAL", "PNEUMONIA")
"""Label index order used everywhere: NORMAL is 0, PNEUMONIA is 1."""
