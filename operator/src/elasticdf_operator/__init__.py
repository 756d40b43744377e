"""Elastic-DF operator: ElasticInference resources -> partitioned, wired segment pods (DESIGN §2, §5.4-5.6)."""

GROUP = "elasticdf.io"
VERSION = "v1alpha1"
