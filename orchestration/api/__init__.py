"""The HTTP API: events in and out, API keys, review endpoints, the reviewer console (an entry point)."""
