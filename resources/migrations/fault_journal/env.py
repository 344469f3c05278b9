"""Alembic environment of the fault-injection journal (tests and benchmarks): orchestration/schema_migrations.py runs it."""

from orchestration.schema_migrations import run_environment

run_environment()
