"""The audit: the keyed hash chain, its anchors and key, retention, and replay."""
