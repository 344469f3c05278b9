"""Migrations of the sample ERP's tables (vendors, purchase orders, ledger, payments, settlements) (owner `erp`, version table `erp_alembic_version`)."""
