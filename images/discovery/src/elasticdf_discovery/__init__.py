"""Elastic-DF node agent: Alveo card discovery and Node labels/annotations."""
