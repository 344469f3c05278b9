"""The context layer: reading sources safely, conflicts between them, freshness, token budgets and the assembled context document."""
