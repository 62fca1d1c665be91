"""Run the reference segmenter: ``python -m segmenter --host 127.0.0.1 --port 8001``."""

import argparse
import logging
import os
import signal
import sys
import tempfile
from pathlib import Path

from werkzeug.serving import make_server

from segmenter.app import DEFAULT_MAX_VOXELS, create_app

logger = logging.getLogger("segmenter")


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m segmenter",
        description="Reference segmenter for development and testing; not a clinical model.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument(
        "--port", type=int, default=8001, help="TCP port to listen on; 0 picks a free port"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Start the segmenter and serve until SIGINT or SIGTERM."""
    arguments = parse_arguments(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")

    token = os.environ.get("SEGMENTER_TOKEN") or os.environ.get("INFERENCE_API_TOKEN")
    if not token:
        print(
            "error: set SEGMENTER_TOKEN (or INFERENCE_API_TOKEN) to the bearer token "
            "that clients must send",
            file=sys.stderr,
        )
        return 2
    max_voxels = int(os.environ.get("SEGMENTER_MAX_VOXELS", DEFAULT_MAX_VOXELS))
    job_delay_s = float(os.environ.get("SEGMENTER_JOB_DELAY_S", "0"))

    with tempfile.TemporaryDirectory(prefix="segmenter-") as default_data_dir:
        data_dir = Path(os.environ.get("SEGMENTER_DATA_DIR") or default_data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        app = create_app(
            token=token, data_dir=data_dir, max_voxels=max_voxels, job_delay_s=job_delay_s
        )
        server = make_server(arguments.host, arguments.port, app, threaded=True)
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
        # Tests and scripts read this line to learn the port chosen for --port 0.
        logger.info("segmenter listening on http://%s:%d", arguments.host, server.server_port)
        try:
            server.serve_forever()
        except (KeyboardInterrupt, SystemExit):
            pass
        finally:
            server.server_close()
            logger.info("segmenter stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
