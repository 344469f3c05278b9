"""What every layer shares: settings, the clock, Bosun's tables and their migrations, the workflow declaration and discovery, lineage groups, stored values."""
