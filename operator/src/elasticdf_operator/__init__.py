"""Elastic-DF operator: ElasticInference resources -> partitioned, wired card pods (DESIGN §2, §5.4-5.6)."""

from elasticdf_contract.names import GROUP, VERSION  # noqa: F401
