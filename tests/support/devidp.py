"""Start the dev identity provider (`devidp/server.mjs`) for a test, and sign in through it.

`start_devidp` runs the Node server on a free 127.0.0.1 port and stops it on exit.
`login_with_password` fills in the sign-in form with `requests`, so a test can run the whole
authorization code flow without a browser.
"""

from __future__ import annotations

import os
import queue
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import parse_qs, urljoin, urlsplit

import requests

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEVIDP_DIR = PROJECT_ROOT / "devidp"
SERVER_SCRIPT = DEVIDP_DIR / "server.mjs"
READY_PREFIX = "dev identity provider listening on "
READY_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 10.0
MAX_REDIRECTS = 10


class DevIdpError(RuntimeError):
    """The dev identity provider failed to start, or the sign-in flow went wrong."""


class LoginFailedError(DevIdpError):
    """The sign-in form was shown again with an error, e.g. after a wrong password."""

    def __init__(self, message: str, page: str):
        super().__init__(message)
        self.page = page


@dataclass
class DevIdp:
    """A running dev identity provider and the client it was started with."""

    issuer: str
    process: subprocess.Popen
    client_id: str
    client_secret: str
    redirect_uris: list[str]
    logout_uris: list[str]
    keys_file: Path
    stderr_file: Path

    def url(self, path: str) -> str:
        """Return the absolute URL of `path` (e.g. "/oauth2/token") on this provider."""
        return self.issuer + path

    def stderr(self) -> str:
        """Return what the server has logged so far."""
        return self.stderr_file.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> int:
        """Send SIGTERM, wait for the exit (kill after 10 s) and return the exit code."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def find_free_port() -> int:
    """Return a TCP port that is free on 127.0.0.1 at the time of the call."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _check_installed() -> str:
    node = shutil.which("node")
    if node is None:
        raise DevIdpError("node is not on PATH; install Node.js 20 or newer")
    if not (DEVIDP_DIR / "node_modules" / "oidc-provider").is_dir():
        raise DevIdpError(f"{DEVIDP_DIR}/node_modules is missing; run `make idp` first")
    return node


def _forward_stdout(stream, lines: queue.Queue) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


def _wait_until_ready(process: subprocess.Popen, lines: queue.Queue, stderr_file: Path) -> str:
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            reason = f"did not print its ready line within {READY_TIMEOUT_SECONDS:.0f} s"
            break
        try:
            line = lines.get(timeout=min(remaining, 0.5))
        except queue.Empty:
            continue
        if line is None:
            reason = f"exited with code {process.wait()} before it was ready"
            break
        if line.startswith(READY_PREFIX):
            return line[len(READY_PREFIX) :].strip()

    stderr = stderr_file.read_text(encoding="utf-8", errors="replace")
    raise DevIdpError(f"dev identity provider {reason}; its stderr:\n{stderr}")


@contextmanager
def start_devidp(
    tmp_path: Path,
    *,
    client_id: str,
    client_secret: str,
    redirect_uris: Sequence[str],
    logout_uris: Sequence[str],
    keys_file: Path | None = None,
    accounts_file: Path | None = None,
    access_token_ttl: int | None = None,
) -> Iterator[DevIdp]:
    """Start `node devidp/server.mjs` on a free 127.0.0.1 port and stop it on exit.

    The signing keys go to `keys_file` (default `tmp_path / "devidp-keys.json"`); pass the
    same file to a second start to keep the same key. Raises DevIdpError with the server's
    stderr when it does not print its ready line within 30 s.
    """
    node = _check_installed()
    port = find_free_port()
    keys_file = keys_file or tmp_path / "devidp-keys.json"
    stderr_file = tmp_path / f"devidp-{port}.stderr.log"

    env = {
        **os.environ,
        "DEVIDP_HOST": "127.0.0.1",
        "DEVIDP_PORT": str(port),
        "DEVIDP_ISSUER": f"http://127.0.0.1:{port}",
        "DEVIDP_CLIENT_ID": client_id,
        "DEVIDP_CLIENT_SECRET": client_secret,
        "DEVIDP_REDIRECT_URIS": ",".join(redirect_uris),
        "DEVIDP_LOGOUT_URIS": ",".join(logout_uris),
        "DEVIDP_KEYS_FILE": str(keys_file),
    }
    if accounts_file is not None:
        env["DEVIDP_ACCOUNTS_FILE"] = str(accounts_file)
    if access_token_ttl is not None:
        env["DEVIDP_ACCESS_TOKEN_TTL"] = str(access_token_ttl)

    with stderr_file.open("wb") as stderr:
        process = subprocess.Popen(
            [node, str(SERVER_SCRIPT)],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    lines: queue.Queue = queue.Queue()
    reader = threading.Thread(target=_forward_stdout, args=(process.stdout, lines), daemon=True)
    reader.start()

    devidp = None
    try:
        issuer = _wait_until_ready(process, lines, stderr_file)
        devidp = DevIdp(
            issuer=issuer,
            process=process,
            client_id=client_id,
            client_secret=client_secret,
            redirect_uris=list(redirect_uris),
            logout_uris=list(logout_uris),
            keys_file=keys_file,
            stderr_file=stderr_file,
        )
        yield devidp
    finally:
        if devidp is not None:
            devidp.stop()
        elif process.poll() is None:
            process.kill()
            process.wait()
        # The reader sees end of file once the process is gone; then the pipe can be closed.
        reader.join(timeout=STOP_TIMEOUT_SECONDS)
        process.stdout.close()


class _FormParser(HTMLParser):
    """Collect the action of the first POST form on a page and the error shown on it."""

    def __init__(self):
        super().__init__()
        self.action: str | None = None
        self.error_parts: list[str] = []
        self._in_error = False

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "form" and self.action is None and attributes.get("method", "").lower() == "post":
            self.action = attributes.get("action") or ""
        if attributes.get("role") == "alert":
            self._in_error = True

    def handle_endtag(self, tag):
        self._in_error = False

    def handle_data(self, data):
        if self._in_error:
            self.error_parts.append(data.strip())


def login_with_password(
    session: requests.Session, authorize_url: str, username: str, password: str
) -> str:
    """Sign in through the provider's form and return the redirect URL to the client.

    Follows the provider's own redirects from `authorize_url`, posts the sign-in form when
    it appears, and stops at the redirect to the request's `redirect_uri`, which it does not
    follow. The returned URL carries `code` and `state`, or `error` when the provider
    rejected the request. Raises LoginFailedError when the form comes back with an error.
    """
    redirect_uri = parse_qs(urlsplit(authorize_url).query).get("redirect_uri", [None])[0]
    if not redirect_uri:
        raise DevIdpError("authorize_url has no redirect_uri parameter")

    response = session.get(authorize_url, allow_redirects=False, timeout=10)
    form_posted = False
    for _ in range(MAX_REDIRECTS):
        if response.is_redirect:
            location = urljoin(response.url, response.headers["Location"])
            if location.startswith(redirect_uri):
                return location
            response = session.get(location, allow_redirects=False, timeout=10)
            continue

        parser = _FormParser()
        parser.feed(response.text)
        if response.status_code != 200 or parser.action is None:
            raise DevIdpError(
                f"expected the sign-in form, got HTTP {response.status_code}: {response.text[:500]}"
            )
        if form_posted:
            message = " ".join(part for part in parser.error_parts if part) or "no message"
            raise LoginFailedError(f"sign-in failed: {message}", response.text)

        response = session.post(
            urljoin(response.url, parser.action),
            data={"username": username, "password": password},
            allow_redirects=False,
            timeout=10,
        )
        form_posted = True

    raise DevIdpError(f"no redirect to {redirect_uri} after {MAX_REDIRECTS} steps")
