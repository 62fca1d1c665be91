"""Run the DICOM conversion of one upload in a child process with memory and CPU limits.

A hostile or huge upload can make pydicom or numpy allocate without bound or spin for
hours. The child sets `RLIMIT_AS` and `RLIMIT_CPU` on itself before it imports the
pipeline, and the parent kills it after a wall-clock limit, so the worker survives.

Run as `python -m portal.isolation REQUEST.json`. The module imports only the standard
library at the top, so the child starts fast and the limits apply to everything it loads.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

LIMIT_EXCEEDED_CODE = "conversion_limit_exceeded"
RESULT_FILE_NAME = "conversion-result.json"
#: Exit status of a child that wrote its result file, whether success or a pipeline error.
EXIT_RESULT_WRITTEN = 0


class ConversionLimitExceeded(Exception):
    """The conversion ran out of memory or time; `limit` is "memory" or "time"."""

    code = LIMIT_EXCEEDED_CODE

    def __init__(self, limit: str):
        super().__init__(f"conversion exceeded its {limit} limit")
        self.limit = limit


class ConversionFailed(Exception):
    """The pipeline rejected the study; `code` and `params` come from its PipelineError."""

    def __init__(self, code: str, params: dict):
        super().__init__(code)
        self.code = code
        self.params = params


@dataclass(frozen=True)
class ChildConversion:
    """The files and facts the child's `convert_study` produced."""

    npz_path: Path
    image_path: Path
    report_path: Path
    report: dict
    modality: str
    series_description: str
    slice_count: int
    series_id: str
    #: The chosen series at its own resolution; None past VIEWER_NATIVE_MAX_BYTES.
    native_path: Path | None = None
    #: Patient identifiers of the chosen series (`PatientIdentifiers.to_dict()`), in memory
    #: only: the caller encrypts them before they reach the database.
    identifiers: dict[str, str] = field(default_factory=dict, repr=False)


def convert_in_child(
    zip_path: Path,
    out_dir: Path,
    *,
    memory_limit_mb: int,
    time_limit_s: float,
    options: dict,
) -> ChildConversion:
    """Convert `zip_path` into `out_dir` in a child process bounded in memory and time.

    `options` are keyword arguments of `portal.pipeline.convert_study` that JSON can carry.
    Raises ConversionFailed for a study the pipeline rejects and ConversionLimitExceeded
    when the child runs out of memory, CPU time or wall-clock time.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    request_path = out_dir.parent / "conversion-request.json"
    result_path = out_dir.parent / RESULT_FILE_NAME
    result_path.unlink(missing_ok=True)
    request = {
        "zip_path": str(zip_path),
        "out_dir": str(out_dir),
        "result_path": str(result_path),
        "memory_limit_mb": memory_limit_mb,
        "cpu_limit_s": int(time_limit_s) + 1,
        "options": options,
    }
    request_path.write_text(json.dumps(request), encoding="utf-8")
    env = {
        **os.environ,
        # One thread per library keeps the address space small under RLIMIT_AS.
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    try:
        completed = subprocess.run(
            [sys.executable, "-m", "portal.isolation", str(request_path)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=time_limit_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        logger.warning("conversion child killed after %.0f s", time_limit_s)
        raise ConversionLimitExceeded("time") from None
    if completed.returncode != EXIT_RESULT_WRITTEN or not result_path.exists():
        return _raise_for_dead_child(completed)
    document = json.loads(result_path.read_text(encoding="utf-8"))
    # The result file contains the patient identifiers in clear, so it is deleted once read.
    result_path.unlink(missing_ok=True)
    if "error" in document:
        error = document["error"]
        if error["code"] == LIMIT_EXCEEDED_CODE:
            raise ConversionLimitExceeded(error.get("limit", "memory"))
        raise ConversionFailed(error["code"], error.get("params", {}))
    return ChildConversion(
        npz_path=Path(document["npz_path"]),
        image_path=Path(document["image_path"]),
        report_path=Path(document["report_path"]),
        report=document["report"],
        modality=document["modality"],
        series_description=document["series_description"],
        slice_count=int(document["slice_count"]),
        series_id=document["series_id"],
        native_path=Path(document["native_path"]) if document.get("native_path") else None,
        identifiers=dict(document.get("identifiers") or {}),
    )


def _raise_for_dead_child(completed: subprocess.CompletedProcess):
    # Only the exception's class name from stderr goes to the log: the message could
    # quote a DICOM value.
    last_line = (completed.stderr or b"").decode(errors="replace").strip().splitlines()[-1:]
    error_name = last_line[0].split(":", 1)[0][:80] if last_line else "no output"
    logger.warning("conversion child exited with status %s (%s)", completed.returncode, error_name)
    if completed.returncode in (-signal.SIGKILL, -signal.SIGXCPU) or "MemoryError" in error_name:
        limit = "time" if completed.returncode == -signal.SIGXCPU else "memory"
        raise ConversionLimitExceeded(limit)
    raise RuntimeError(f"conversion child exited with status {completed.returncode}")


def _set_limits(memory_limit_mb: int, cpu_limit_s: int) -> None:
    import resource

    memory_bytes = memory_limit_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    # The soft limit sends SIGXCPU; the hard limit a second later kills for sure.
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_limit_s, cpu_limit_s + 1))


def _child_main(request_path: str) -> int:
    request = json.loads(Path(request_path).read_text(encoding="utf-8"))
    _set_limits(request["memory_limit_mb"], request["cpu_limit_s"])
    result_path = Path(request["result_path"])
    try:
        from portal.pipeline import PipelineError, convert_study

        options = dict(request["options"])
        if "target_hw" in options:
            options["target_hw"] = tuple(options["target_hw"])
        result = convert_study(Path(request["zip_path"]), Path(request["out_dir"]), **options)
        document = {
            "npz_path": str(result.npz_path),
            "image_path": str(result.image_path),
            "report_path": str(result.report_path),
            "report": result.report,
            "modality": result.modality,
            "series_description": result.series_description or "",
            "slice_count": result.slice_count,
            "series_id": result.series_id,
            "native_path": str(result.native_path) if result.native_path else None,
            "identifiers": result.identifiers.to_dict(),
        }
    except PipelineError as error:
        document = {
            "error": {"code": error.code, "params": _json_params(getattr(error, "params", {}))}
        }
    except MemoryError:
        document = {"error": {"code": LIMIT_EXCEEDED_CODE, "limit": "memory"}}
    result_path.write_text(json.dumps(document), encoding="utf-8")
    return EXIT_RESULT_WRITTEN


def _json_params(params: dict) -> dict:
    return {
        name: value
        for name, value in (params or {}).items()
        if isinstance(value, str | int | float | bool)
    }


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1]))
