"""Elastic-DF partitioner: the domain core (no Kubernetes imports).

Vocabulary: card, SLR, layer, folding, segment, instance, plan, fabric (see DESIGN.md §3).
"""
