"""Alembic environment of the fault-injection journal (tests and benchmarks): orchestration/core/schema_migrations.py runs it."""

from orchestration.core.schema_migrations import run_environment

run_environment()
