"""Alembic script directories of the schemas resources own (see orchestration/schema_migrations.py)."""
