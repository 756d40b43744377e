"""spec.model -> a layer graph, without ever blocking a reconcile on a download.

Zoo names build at once. Artifacts are fetched and imported on daemon threads (at most `workers` at once) with
the shared policy of elasticdf_partitioner.artifacts, configured by the chart through ELASTICDF_MODEL_*
variables; until the graph is there, `graph()` raises ModelPending and the reconcile reports
PartitionSolved=Unknown/ModelFetching; the periodic resync picks the graph up. A failed fetch (ModelFetchFailed)
is tried again after a backoff (5 s, 10 s, … 5 min) so a server or registry that comes back is noticed; an
invalid model is not retried when a digest pins its content (fixing it means a new spec, hence a new key).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import PurePosixPath
from urllib.parse import urlsplit

from elasticdf_partitioner.artifacts import FETCH_FAILED, MODEL_INVALID, ONNX_FIELD, FetchPolicy, ModelError, fetch
from elasticdf_partitioner.graph import ModelGraph
from elasticdf_partitioner.modelio import load_model

from .api import ModelSource

log = logging.getLogger("elasticdf.modelfetch")
RETRY_FIRST, RETRY_MAX = 5.0, 300.0
KEEP_GRAPHS = 8


class ModelPending(Exception):
    """The model is being fetched; the message says from where."""


@dataclass
class _Attempt:
    future: Future
    failures: int = 0
    retry_at: float = 0.0
    last_error: BaseException | None = None  # reported while a retry is under way


def _zoo_graph(name: str) -> ModelGraph:
    from elasticdf_partitioner.zoo import load_model as zoo_model

    return zoo_model(name)


class ModelStore:
    """Graphs of spec.model sources: zoo names (built on first use) and artifacts (fetched in the background)."""

    def __init__(self, policy: FetchPolicy, workers: int = 2, clock: Callable[[], float] = time.monotonic):
        self.policy = policy
        self.clock = clock
        self.slots = threading.BoundedSemaphore(workers)  # downloads at once
        self.graphs: OrderedDict[tuple, ModelGraph] = OrderedDict()
        self.attempts: dict[tuple, _Attempt] = {}
        self.lock = threading.Lock()

    def graph(self, source: ModelSource) -> ModelGraph:
        """The graph of `source`; raises ModelPending while it is fetched, ModelError when it cannot be used,
        ElasticDFError for an unknown zoo name."""
        if source.artifacts is None:
            key = ("zoo", source.name)
            with self.lock:
                if key in self.graphs:
                    return self.graphs[key]
            return self._keep(key, _zoo_graph(source.name))
        uri, digest = source.artifacts.onnx, source.artifacts.sha256
        key = ("artifact", uri, digest)
        with self.lock:
            if key in self.graphs:
                self.graphs.move_to_end(key)
                return self.graphs[key]
            attempt = self.attempts.get(key)
            if attempt is None:
                self.attempts[key] = _Attempt(self._submit(uri, digest))
                raise ModelPending(f"fetching {ONNX_FIELD} {uri}")
            if not attempt.future.done():
                raise attempt.last_error or ModelPending(f"fetching {ONNX_FIELD} {uri}")
            error = attempt.future.exception()
            if error is None:
                del self.attempts[key]
                graph = attempt.future.result()
            else:
                self._maybe_retry(attempt, error, uri, digest)
                raise error
        return self._keep(key, graph)

    def _keep(self, key: tuple, graph: ModelGraph) -> ModelGraph:
        with self.lock:
            self.graphs[key] = graph
            self.graphs.move_to_end(key)
            while len(self.graphs) > KEEP_GRAPHS:
                self.graphs.popitem(last=False)
        return graph

    def _submit(self, uri: str, digest: str | None) -> Future:
        """Fetch and import on a daemon thread (not a ThreadPoolExecutor: its threads are joined at exit, so a
        download under way would hold up the operator's shutdown)."""
        future: Future = Future()

        def run() -> None:
            with self.slots:
                try:
                    future.set_result(self._fetch_and_load(uri, digest))
                except BaseException as err:  # noqa: BLE001 - handed to the reconcile through the future
                    future.set_exception(err)

        threading.Thread(target=run, name="model-fetch", daemon=True).start()
        return future

    def _fetch_and_load(self, uri: str, digest: str | None) -> ModelGraph:
        started = time.perf_counter()
        try:
            path = fetch(uri, digest, self.policy)
            graph = load_model(path, PurePosixPath(urlsplit(uri).path).stem or None)
        except ModelError as err:
            log.warning("model %s: %s: %s", uri, err.reason, err)
            raise
        except Exception as err:  # an importer tripping over a model it should have refused: report, don't crash
            log.warning("model %s: import failed: %s: %s", uri, type(err).__name__, err)
            raise ModelError(MODEL_INVALID, ONNX_FIELD, f"the model could not be imported ({type(err).__name__}: "
                             f"{err})") from None
        log.info("model %s: %d layers, fetched and imported in %.2f s", uri, len(graph.layers),
                 time.perf_counter() - started)
        return graph

    def _maybe_retry(self, attempt: _Attempt, error: BaseException, uri: str, digest: str | None) -> None:
        """Schedule (or start, when due) another try of a failed fetch; an invalid model is final when a digest
        pins its content (file:// and pvc:// without one may be fixed in place)."""
        if not isinstance(error, ModelError) or error.reason not in (FETCH_FAILED, MODEL_INVALID) \
                or (error.reason == MODEL_INVALID and digest is not None):
            return
        now = self.clock()
        attempt.last_error = error
        if attempt.retry_at == 0.0:
            attempt.failures += 1
            attempt.retry_at = now + min(RETRY_FIRST * 2 ** (attempt.failures - 1), RETRY_MAX)
        elif now >= attempt.retry_at:
            attempt.future, attempt.retry_at = self._submit(uri, digest), 0.0


_STORE: list[ModelStore] = []


def store() -> ModelStore:
    """The process's ModelStore, configured from the environment (the chart's modelFetch values)."""
    if not _STORE:
        _STORE.append(ModelStore(FetchPolicy.from_env(), int(os.environ.get("ELASTICDF_MODEL_FETCH_WORKERS", "2"))))
    return _STORE[0]


def pull_secret() -> str | None:
    """The dockerconfigjson Secret for oci:// (chart value modelFetch.pullSecret), mounted into segment pods."""
    return os.environ.get("ELASTICDF_MODEL_PULL_SECRET") or None
