"""Start the reference segmenter in a subprocess on a free loopback port, for tests."""

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
LISTENING_PATTERN = re.compile(r"listening on (http://127\.0\.0\.1:\d+)")
START_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class RunningSegmenter:
    """A segmenter process started by a test: its base URL, token and log file."""

    base_url: str
    token: str
    log_path: Path


@contextmanager
def run_segmenter(
    work_dir: Path, *, token: str, extra_env: dict[str, str] | None = None
) -> Iterator[RunningSegmenter]:
    """Run ``python -m segmenter --port 0`` until the block exits, then stop it.

    The segmenter picks a free port itself and logs it, so there is no race between
    choosing a port and binding it.
    """
    log_path = work_dir / "segmenter.log"
    environment = {
        **os.environ,
        "SEGMENTER_TOKEN": token,
        "SEGMENTER_DATA_DIR": str(work_dir / "data"),
        **(extra_env or {}),
    }
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "segmenter", "--host", "127.0.0.1", "--port", "0"],
            cwd=PROJECT_ROOT,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        base_url = _wait_for_listening_line(process, log_path)
        yield RunningSegmenter(base_url=base_url, token=token, log_path=log_path)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _wait_for_listening_line(process: subprocess.Popen, log_path: Path) -> str:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        match = LISTENING_PATTERN.search(log_path.read_text(errors="replace"))
        if match:
            return match.group(1)
        if process.poll() is not None:
            break
        time.sleep(0.05)
    raise RuntimeError(
        f"segmenter did not start within {START_TIMEOUT_S} s (exit code {process.poll()}); "
        f"log:\n{log_path.read_text(errors='replace')}"
    )
