"""The gateway process: REST (aiohttp) and gRPC (grpcio asyncio) on one event loop in front of one Pipeline.

Why these: aiohttp is a maintained asyncio HTTP/1.1 server with keep-alive, request size limits and graceful
shutdown, and grpcio's asyncio server is the reference gRPC implementation; both run on the same loop as the
pipeline's sockets, so a request crosses no thread and no lock between client and segments.

Drain (SIGTERM): readiness turns 503 at once so the Service stops sending new connections here; the listeners
close, requests in flight (REST and gRPC) finish or time out within `drain_seconds`, then the pipeline stops.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from .grpc_service import make_server as make_grpc_server
from .pipeline import Pipeline
from .rest import make_app
from .service import Service

log = logging.getLogger("elasticdf.gateway")


class Gateway:
    def __init__(self, service: Service, max_body_bytes: int = 64 << 20, drain_seconds: float = 30.0):
        self.service = service
        self.max_body_bytes, self.drain_seconds = max_body_bytes, drain_seconds
        self.runner: web.AppRunner | None = None
        self.grpc = None
        self.http_port = self.grpc_port = 0

    @property
    def pipeline(self) -> Pipeline:
        return self.service.pipeline

    async def start(self, host: str, http_port: int, grpc_port: int) -> None:
        await self.pipeline.start()
        self.runner = web.AppRunner(make_app(self.service, self.max_body_bytes), access_log=None,
                                    shutdown_timeout=self.drain_seconds)
        await self.runner.setup()
        site = web.TCPSite(self.runner, host, http_port, reuse_address=True)
        await site.start()
        self.http_port = self.runner.addresses[0][1]
        self.grpc = make_grpc_server(self.service, self.max_body_bytes)
        self.grpc_port = self.grpc.add_insecure_port(f"{host}:{grpc_port}")
        await self.grpc.start()
        log.info("serving %s: REST on %s:%d, gRPC on %s:%d", self.service.model.name, host, self.http_port, host,
                 self.grpc_port)

    async def stop(self) -> None:
        """Graceful: stop accepting, let in-flight requests finish (at most drain_seconds), then disconnect."""
        self.pipeline.draining = True
        log.info("draining: %d batches in flight, %d frames queued", len(self.pipeline.batches),
                 self.pipeline.queued_frames)
        await asyncio.gather(self.grpc.stop(self.drain_seconds), self.runner.cleanup())
        await self.pipeline.stop()
        log.info("stopped")
