"""Serving Prometheus metrics: the operator's and the node agents' /metrics endpoint."""

from __future__ import annotations

from wsgiref.simple_server import WSGIServer

from prometheus_client import start_http_server


def serve(listen: str) -> WSGIServer:
    """Serve /metrics of the default registry on `listen` (`HOST:PORT`; port 0 picks one)
    from a thread, until the server returned is shut down (`server.shutdown()`)."""
    host, _, port = listen.rpartition(":")
    server, _ = start_http_server(int(port), addr=host or "0.0.0.0")  # noqa: S104 -- a pod
    return server
