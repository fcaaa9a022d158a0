"""Serve a fake backend on a local port, for code that must talk over a real socket.

Any SDK can then be pointed at it with ``base_url`` (or ``ANTHROPIC_BASE_URL``)::

    with serve(FakeAnthropic()) as base_url:
        client = anthropic.Anthropic(api_key="test", base_url=base_url)

Requests are converted to ``httpx2.Request`` and answered by ``backend.handler``, so the server
and the in-process transport behave the same. Event streams are sent chunk by chunk with chunked
transfer encoding; a stream the backend cuts (`FakeAnthropic.cut_next_stream`) ends without its
final chunk, which clients see as a dropped connection.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

import httpx2

__all__ = ["Backend", "run_forever", "serve"]

_STREAMED_TYPES = ("text/event-stream", "application/binary", "application/x-jsonl")
_HOP_BY_HOP = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive"})


class Backend(Protocol):
    """Anything that answers an ``httpx2.Request`` (every fake backend in this package)."""

    def handler(self, request: httpx2.Request) -> httpx2.Response: ...


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    backend: Backend


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # the library never prints
        pass

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _handle(self) -> None:
        body = self._read_body()
        bound = self.server.server_address
        host = self.headers.get("Host") or f"{bound[0]!s}:{bound[1]}"
        headers = [(k, v) for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP]
        request = httpx2.Request(self.command, f"http://{host}{self.path}", headers=headers, content=body)
        try:
            response = self.server.backend.handler(request)
        except Exception as exc:  # a bug in the backend: answer 500 rather than drop the connection
            message = f"fake backend failed: {exc!r}"
            response = httpx2.Response(500, json={"type": "error", "error": {"type": "api_error",
                                                                             "message": message}})
        streamed = response.headers.get("content-type", "").split(";")[0].strip() in _STREAMED_TYPES
        try:
            if streamed:
                self._send_chunked(response)
            else:
                self._send_whole(response)
        finally:
            response.close()

    def _send_head(self, response: httpx2.Response, extra: dict[str, str]) -> None:
        self.send_response(response.status_code)
        for name, value in response.headers.multi_items():
            if name.lower() not in _HOP_BY_HOP:
                self.send_header(name, value)
        for name, value in extra.items():
            self.send_header(name, value)
        self.end_headers()

    def _send_whole(self, response: httpx2.Response) -> None:
        data = b"".join(response.iter_raw())
        self._send_head(response, {"Content-Length": str(len(data))})
        self.wfile.write(data)
        self.wfile.flush()

    def _send_chunked(self, response: httpx2.Response) -> None:
        self._send_head(response, {"Transfer-Encoding": "chunked"})
        try:
            for chunk in response.iter_raw():
                if chunk:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    self.wfile.flush()
        except httpx2.TransportError:
            self.close_connection = True  # the backend cut the stream: no final chunk
            return
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _serve(self) -> None:
        try:
            self._handle()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve


class _Server6(_Server):
    address_family = socket.AF_INET6


def _start(backend: Backend, host: str, port: int) -> tuple[_Server, str]:
    server = (_Server6 if ":" in host else _Server)((host, port), _Handler)
    server.backend = backend
    shown = f"[{host}]" if ":" in host else host
    return server, f"http://{shown}:{server.server_port}"


@contextmanager
def serve(backend: Backend, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Run ``backend`` on ``host:port`` (0 = any free port) in a daemon thread; yields the base URL."""
    server, base_url = _start(backend, host, port)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              name=f"budgetclient-fake-server {base_url}", daemon=True)
    thread.start()
    try:
        yield base_url
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def run_forever(backend: Backend, host: str = "127.0.0.1", port: int = 8765, *,
                on_ready: Callable[[str], None] | None = None) -> None:
    """Serve ``backend`` in the foreground until interrupted (for ``budgetclient fake-server``).

    ``on_ready`` receives the base URL once the port is bound, so a CLI can announce it.
    """
    server, base_url = _start(backend, host, port)
    if on_ready is not None:
        on_ready(base_url)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
