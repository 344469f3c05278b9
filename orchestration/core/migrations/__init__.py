"""Alembic script directories of the schemas the engine owns (see orchestration/core/schema_migrations.py)."""
