"""Alembic environment of the notification outbox's table: orchestration/core/schema_migrations.py runs it."""

from orchestration.core.schema_migrations import run_environment

run_environment()
