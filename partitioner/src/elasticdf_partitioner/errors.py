"""Typed errors a user can act on: each names the field or node and what would be allowed."""

from __future__ import annotations


class ElasticDFError(Exception):
    """Base class: the CLI prints the message and exits 2 (bad input / infeasible), never a traceback."""


class InputError(ElasticDFError):
    """Bad user input: names the field (or node) and the allowed values."""

    def __init__(self, field: str, problem: str, allowed: object | None = None):
        self.field = field
        self.problem = problem
        self.allowed = allowed
        message = f"{field}: {problem}"
        if allowed is not None:
            message += f" (allowed: {allowed})"
        super().__init__(message)


class InfeasibleError(ElasticDFError):
    """No plan exists: the message says which resource is short, where, and by how much."""
