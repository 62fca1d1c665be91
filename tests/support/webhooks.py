"""A webhook receiver on 127.0.0.1 for tests, and the signature a receiver expects."""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import threading


class Receiver:
    """An HTTP server on 127.0.0.1 that records each POST and responds with queued statuses."""

    def __init__(self):
        self.requests: list[dict] = []
        self.statuses: list[int] = []
        self.extra_headers: dict[str, str] = {}
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                receiver.requests.append(
                    {"path": self.path, "headers": dict(self.headers), "body": body}
                )
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                for name, value in receiver.extra_headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/vizier"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    def events(self) -> list[dict]:
        return [json.loads(request["body"]) for request in self.requests]


def expected_signature(secret: str, request: dict) -> str:
    headers = request["headers"]
    message = (
        f"{headers['Vizier-Webhook-Id']}.{headers['Vizier-Webhook-Timestamp']}.".encode()
        + request["body"]
    )
    return "v1=" + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
