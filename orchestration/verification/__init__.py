"""The verification layer: outcome reconciliation and the standard outcome checks, expectations, per-batch metrics, Prometheus, tracing, the decision report."""
