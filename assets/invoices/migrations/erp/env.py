"""Alembic environment of the sample ERP's tables (vendors, purchase orders, ledger, payments, settlements): orchestration/core/schema_migrations.py runs it."""

from orchestration.core.schema_migrations import run_environment

run_environment()
