"""Migrations of the notification outbox's table (owner `outbox`, version table `outbox_alembic_version`)."""
