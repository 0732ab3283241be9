"""A threaded HTTP server on a free loopback port, for tests that fetch from a server of their own."""

from __future__ import annotations

import http.server
import threading
from contextlib import contextmanager
from typing import Iterator, Type


@contextmanager
def serving(handler: Type[http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    """Serve ``handler`` on 127.0.0.1; yields the base URL, and stops and closes the server on exit."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
