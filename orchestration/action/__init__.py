"""The action layer: action types, the durable saga executor and its log, entity leases, circuit breaker and shared rate limits."""
