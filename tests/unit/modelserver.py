"""A real HTTP server on 127.0.0.1 that serves model files and misbehaves on request (fetcher tests, e2e)."""

from __future__ import annotations

import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


@dataclass
class Route:
    body: bytes
    fail_first: int = 0  # answer 503 to the first N requests
    status: int = 200
    truncate_at: int | None = None  # declare the full length, send this many bytes, close
    stall_seconds: float = 0.0  # send the headers, then wait this long before the body
    chunked: bool = False  # no Content-Length (the size is known only by reading)
    hits: int = 0


@dataclass
class ModelServer:
    """`with ModelServer() as s: s.routes["/m.onnx"] = Route(data); s.url("/m.onnx")`; stopped on exit."""

    routes: dict[str, Route] = field(default_factory=dict)
    tls: tuple[Path, Path] | None = None  # (certificate chain PEM, key PEM): serve https

    def __enter__(self) -> ModelServer:
        routes = self.routes

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):  # noqa: N802 - http.server's name
                route = routes.get(self.path)
                if route is None:
                    self.send_error(404)
                    return
                route.hits += 1
                if route.hits <= route.fail_first or route.status != 200:
                    self.send_response(503 if route.hits <= route.fail_first else route.status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                if route.chunked:
                    self.send_header("Connection", "close")
                else:
                    self.send_header("Content-Length", str(len(route.body)))
                self.end_headers()
                time.sleep(route.stall_seconds)
                body = route.body if route.truncate_at is None else route.body[:route.truncate_at]
                try:
                    self.wfile.write(body)
                    self.wfile.flush()
                except OSError:
                    pass  # the client gave up (timeouts under test)
                if route.truncate_at is not None or route.chunked:
                    self.close_connection = True

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if self.tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*self.tls)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.server.daemon_threads = True
        self.server.handle_error = lambda *_: None  # clients that give up mid-answer are what tests do
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def url(self, path: str) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}{path}"
