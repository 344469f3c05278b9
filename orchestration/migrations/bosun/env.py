"""Alembic environment of Bosun's engine tables: orchestration/schema_migrations.py runs it."""

from orchestration.schema_migrations import run_environment

run_environment()
