"""Elastic-DF inference gateway (KServe v2 REST) in front of the pipeline instances."""
