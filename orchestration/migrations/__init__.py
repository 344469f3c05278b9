"""Alembic script directories of the schemas the engine owns (see orchestration/schema_migrations.py)."""
