"""A tiny HTTP server on 127.0.0.1 (loopback only) for the reliability tests, in a daemon thread.

Routes: /ok.png (a PNG), /missing.png (404), /error.png (500 always), /flaky.png (503 on the first
request, then the PNG), /slow.png (headers and a few bytes, then a pause of PAUSE seconds),
/big.png (BIG bytes of body with no Content-Length), /redirect/ok.png (302 to /ok.png), /loop.png
(302 to itself), /to-loopback-2.png (302 to 127.0.0.2, another loopback address, same port),
/list.txt (a text manifest naming ok.png and missing.png), /slow-list.txt (that manifest, paused as
/slow.png is).
"""
from __future__ import annotations

import contextlib
import http.server
import threading
import time

PAUSE = 2.0
BIG = 3 * 2**20
MANIFEST = b"ok.png\nmissing.png\n"
REDIRECTS = {"/redirect/ok.png": "../ok.png", "/loop.png": "/loop.png",
             "/to-loopback-2.png": "http://127.0.0.2:{port}/ok.png"}


@contextlib.contextmanager
def serve(png: bytes):
    hits: dict[str, int] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep test output quiet
            pass

        def do_GET(self):  # noqa: N802 - http.server's naming
            hits[self.path] = hits.get(self.path, 0) + 1
            if self.path == "/ok.png" or (self.path == "/flaky.png" and hits[self.path] > 1):
                self._reply(200, png)
            elif self.path == "/flaky.png":
                self._reply(503, b"busy")
            elif self.path == "/error.png":
                self._reply(500, b"boom")
            elif self.path == "/list.txt":
                self._reply(200, MANIFEST)
            elif self.path in ("/slow.png", "/slow-list.txt"):
                body = png if self.path == "/slow.png" else MANIFEST
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[:10])
                self.wfile.flush()
                time.sleep(PAUSE)
                with contextlib.suppress(OSError):
                    self.wfile.write(body[10:])
            elif self.path == "/big.png":
                self.send_response(200)
                self.end_headers()  # no Content-Length: the body runs until the connection closes
                with contextlib.suppress(OSError):
                    for _ in range(BIG // 65536):
                        self.wfile.write(b"\0" * 65536)
            elif self.path in REDIRECTS:
                port = self.server.server_address[1]
                self.send_response(302)
                self.send_header("Location", REDIRECTS[self.path].format(port=port))
                self.send_header("Content-Length", "0")
                self.end_headers()
            else:
                self._reply(404, b"not here")

        def _reply(self, status, body):
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", hits
    finally:
        server.shutdown()
        server.server_close()
