"""Revision files, one per schema change, named NNNN_what.py (`bosun db revision`)."""
