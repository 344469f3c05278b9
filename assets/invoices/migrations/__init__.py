"""Alembic script directories of the schemas the invoice workflow owns (its ERP) (see orchestration/schema_migrations.py)."""
