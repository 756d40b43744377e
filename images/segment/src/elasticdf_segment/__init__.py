"""Elastic-DF segment runtime: runs one segment of one pipeline instance (DESIGN §5.5)."""
