"""Alembic script directories of the schemas the invoice workflow owns (its ERP) (see orchestration/core/schema_migrations.py)."""
