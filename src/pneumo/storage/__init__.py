"""Patient records: SQLAlchemy tables, keyword-only repository functions, Alembic migrations.

SQLite by default (``$PNEUMO_DB`` or ``~/.local/share/pneumo/pneumo.db``), any SQLAlchemy URL as
an option. Importing this package is cheap; SQLAlchemy loads with ``db`` / ``repository``."""
