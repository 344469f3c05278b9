"""Migrations of the fault-injection journal (tests and benchmarks) (owner `fault_journal`, version table `fault_journal_alembic_version`)."""
