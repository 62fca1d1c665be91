"""A scripted HTTP server on a free loopback port that misbehaves on purpose."""

import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Reply:
    """One scripted response; ``delay_s`` delays the reply, to cause read timeouts."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


@dataclass
class ReceivedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class FakeInferenceServer:
    """Reply to each (method, path) with its scripted replies in order, repeating the last.

    Paths without a script get 404. Every request is recorded in ``requests``.
    """

    def __init__(self):
        self.routes: dict[tuple[str, str], list[Reply]] = {}
        self.requests: list[ReceivedRequest] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._make_handler())
        self._server.daemon_threads = True
        # A short poll interval keeps shutdown() from adding half a second to every test.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def script(self, method: str, path: str, *replies: Reply) -> None:
        self.routes[(method, path)] = list(replies)

    def count(self, method: str, path: str) -> int:
        with self._lock:
            return sum(1 for seen in self.requests if (seen.method, seen.path) == (method, path))

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _next_reply(self, method: str, path: str) -> Reply:
        with self._lock:
            replies = self.routes.get((method, path))
            if not replies:
                return Reply(404, b'{"code": "not_found", "message": "no script"}')
            return replies.pop(0) if len(replies) > 1 else replies[0]

    def _make_handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with fake._lock:
                    fake.requests.append(
                        ReceivedRequest(self.command, self.path, dict(self.headers), body)
                    )
                reply = fake._next_reply(self.command, self.path)
                if reply.delay_s:
                    time.sleep(reply.delay_s)
                try:
                    self.send_response(reply.status)
                    headers = {"Content-Type": "application/json", **reply.headers}
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(reply.body)))
                    self.end_headers()
                    self.wfile.write(reply.body)
                except (BrokenPipeError, ConnectionResetError):
                    # The client gave up after its read timeout; nothing is left to send.
                    pass

            do_GET = do_POST = do_DELETE = _answer

            def log_message(self, format, *args):
                pass

        return Handler
