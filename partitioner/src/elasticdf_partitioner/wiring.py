"""The wiring contract moved to `elasticdf_contract.wiring` (images install it without the solver); this
re-export keeps `elasticdf_partitioner.wiring` imports of code written before the move working."""

from elasticdf_contract.wiring import Artifacts, CardWiring, Endpoint, SegmentWiring, check_chain  # noqa: F401
