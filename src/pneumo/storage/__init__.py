"""Patient records: SQLAlchemy tables and keyword-only repository functions."""
