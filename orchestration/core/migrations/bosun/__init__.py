"""Migrations of Bosun's engine tables (owner `bosun`, version table `bosun_alembic_version`)."""
