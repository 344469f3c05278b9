"""Alembic script directories of the schemas resources own (see orchestration/core/schema_migrations.py)."""
