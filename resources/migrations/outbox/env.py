"""Alembic environment of the notification outbox's table: orchestration/schema_migrations.py runs it."""

from orchestration.schema_migrations import run_environment

run_environment()
