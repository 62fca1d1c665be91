"""HTTP client of the inference API: submit a volume, poll the job, fetch the mask.

The contract is documented in ``docs/inference-api.md``. The client has no Flask or
database imports, so the worker, the CLI and tests can use it alone.
"""

import email.utils
import io
import json
import logging
import random
import re
import threading
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import requests

from portal.inference.errors import (
    INFERENCE_BAD_RESPONSE,
    INFERENCE_FAILED,
    INFERENCE_REJECTED,
    INFERENCE_UNAVAILABLE,
    InferenceError,
    InferenceTimeout,
)

logger = logging.getLogger(__name__)

CATALOGUE_PATH = Path(__file__).resolve().parent.parent / "data" / "categories.json"

JOB_STATUSES = frozenset({"queued", "running", "succeeded", "failed", "cancelled"})
TERMINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})
#: Job ids go into URL paths, so only unreserved URL characters are accepted.
JOB_ID_PATTERN = re.compile(r"^[A-Za-z0-9._~-]{1,200}$")
MAX_JSON_BYTES = 64 * 1024
#: Room for the NPZ container, the array headers and the labels array beside the mask.
RESULT_OVERHEAD_BYTES = 1024 * 1024
#: Upper bound on a server's Retry-After, so a bad header cannot stall a worker for hours.
MAX_RETRY_AFTER_S = 120.0
RESULT_CONTENT_TYPE = "application/octet-stream"


@dataclass(frozen=True)
class JobStatus:
    """Status of one inference job as the provider reported it."""

    status: str
    progress: int
    error_code: str | None = None
    error_message: str | None = None

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES


@dataclass(frozen=True)
class InferenceResult:
    """A validated result: uint8 ``mask`` of shape (z, y, x) and the label values in it."""

    mask: np.ndarray
    labels: tuple[int, ...]


def load_catalogue_values(path: Path = CATALOGUE_PATH) -> frozenset[int]:
    """Read the label values of the category catalogue."""
    document = json.loads(path.read_text(encoding="utf-8"))
    return frozenset(int(entry["value"]) for entry in document["categories"])


class InferenceClient:
    """Client of one inference API service.

    Every request carries the bearer token and the connect and read timeouts. Connection
    errors, timeouts, HTTP 429 and 5xx are retried up to ``max_retries`` times with
    exponential backoff and jitter (a 429's Retry-After is honoured), and then raise
    ``InferenceError`` with code ``inference_unavailable``. A session passed in stays open
    after ``close()``; one the client created is closed by it.
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 60.0,
        job_timeout_s: float = 300.0,
        poll_initial_s: float = 0.5,
        poll_max_s: float = 10.0,
        session: requests.Session | None = None,
        max_retries: int = 3,
        retry_initial_s: float = 0.5,
        retry_max_s: float = 10.0,
        category_values: Sequence[int] | None = None,
    ):
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, not {base_url!r}")
        if not token:
            raise ValueError("token must not be empty")
        self._base_url = base_url.rstrip("/")
        self._token = token
        self._timeout = (connect_timeout_s, read_timeout_s)
        self._job_timeout_s = job_timeout_s
        self._poll_initial_s = poll_initial_s
        self._poll_max_s = poll_max_s
        self._max_retries = max_retries
        self._retry_initial_s = retry_initial_s
        self._retry_max_s = retry_max_s
        self._owns_session = session is None
        self._session = session or requests.Session()
        self._catalogue_values = frozenset(
            int(value) for value in (category_values or load_catalogue_values())
        )
        self._random = random.Random()
        self._categories_by_job: dict[str, tuple[int, ...]] = {}
        self._categories_lock = threading.Lock()

    def __repr__(self) -> str:
        # The token is left out on purpose: reprs end up in logs and tracebacks.
        return f"InferenceClient(base_url={self._base_url!r})"

    def __enter__(self) -> "InferenceClient":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        """Close the HTTP session when the client created it."""
        if self._owns_session:
            self._session.close()

    def submit(self, npz_path: Path, categories: Sequence[int], *, idempotency_key: str) -> str:
        """Upload an input NPZ and return the provider's job id.

        ``categories`` are label values of the catalogue, and an empty sequence requests
        all of them. Resending
        the same ``idempotency_key`` returns the same job, which is what makes retrying a
        POST safe. Raises ``ValueError`` for unknown categories or an empty key.
        """
        requested = tuple(int(value) for value in categories)
        unknown = sorted(set(requested) - self._catalogue_values)
        if unknown:
            raise ValueError(
                f"categories {unknown} are not in the catalogue {sorted(self._catalogue_values)}"
            )
        if not idempotency_key:
            raise ValueError("idempotency_key must not be empty")

        form = [("categories", str(value)) for value in requested]
        with Path(npz_path).open("rb") as volume_file:

            def build_body() -> dict:
                volume_file.seek(0)
                # A fixed file name: the upload must not carry the study's own file names.
                return {
                    "data": form,
                    "files": {"volume": ("volume.npz", volume_file, "application/octet-stream")},
                }

            status_code, body = self._request(
                "POST",
                "/v1/jobs",
                expected_statuses=(200, 201, 202),
                max_body_bytes=MAX_JSON_BYTES,
                headers={"Idempotency-Key": idempotency_key},
                build_body=build_body,
            )
        document = _parse_json_object(body, what="job submission")
        job_id = document.get("job_id")
        if not isinstance(job_id, str) or not JOB_ID_PATTERN.match(job_id):
            raise _bad_response("job submission", "job_id is missing or not a safe id")
        with self._categories_lock:
            self._categories_by_job[job_id] = requested
        logger.info("inference job %s submitted (HTTP %d)", job_id, status_code)
        return job_id

    def get_status(self, job_id: str) -> JobStatus:
        """Return the job's current status."""
        _check_job_id(job_id)
        _, body = self._request(
            "GET", f"/v1/jobs/{job_id}", expected_statuses=(200,), max_body_bytes=MAX_JSON_BYTES
        )
        return _parse_status(_parse_json_object(body, what="job status"))

    def wait(
        self,
        job_id: str,
        *,
        on_progress: Callable[[JobStatus], None] | None = None,
        before_poll: Callable[[], None] | None = None,
    ) -> JobStatus:
        """Poll the job until it succeeds or is cancelled, and return that status.

        Polls start ``poll_initial_s`` apart and double up to ``poll_max_s``, with jitter.
        ``on_progress`` receives every status that differs from the previous one, and
        ``before_poll`` runs before every poll, so the caller can stop waiting by raising
        from it (the worker does when the study was cancelled). Raises
        ``InferenceError`` with code ``inference_failed`` (and the provider's code in
        ``provider_code``) when the job failed, and ``InferenceTimeout`` when it has not
        finished within ``job_timeout_s``.
        """
        deadline = time.monotonic() + self._job_timeout_s
        delay_s = self._poll_initial_s
        last_status: JobStatus | None = None
        while True:
            if before_poll is not None:
                before_poll()
            status = self.get_status(job_id)
            if status != last_status and on_progress is not None:
                on_progress(status)
            last_status = status
            if status.status == "failed":
                raise InferenceError(
                    INFERENCE_FAILED,
                    "Inference job {job_id} failed: {provider_code}: {provider_message}",
                    params={
                        "job_id": job_id,
                        "provider_code": status.error_code,
                        "provider_message": status.error_message,
                    },
                    provider_code=status.error_code,
                )
            if status.is_terminal:
                return status
            remaining_s = deadline - time.monotonic()
            if remaining_s <= 0:
                raise InferenceTimeout(job_id, self._job_timeout_s, status.status)
            time.sleep(min(self._jitter(delay_s), remaining_s))
            delay_s = min(delay_s * 2, self._poll_max_s)

    def fetch_result(
        self,
        job_id: str,
        *,
        expected_shape_zyx: Sequence[int],
        categories: Sequence[int] | None = None,
    ) -> InferenceResult:
        """Download and validate the result NPZ of a succeeded job.

        ``categories`` are the label values requested for the job. When they are omitted,
        the client uses the ones it submitted, or the whole catalogue for a job that it did
        not submit. Raises ``InferenceError`` with code ``inference_bad_response`` unless
        the response is an NPZ of the right content type and size that contains a uint8
        ``mask`` of ``expected_shape_zyx`` and int32 ``labels`` matching the mask and the
        request.
        """
        _check_job_id(job_id)
        shape_zyx = tuple(int(size) for size in expected_shape_zyx)
        if len(shape_zyx) != 3 or min(shape_zyx) < 1:
            raise ValueError(f"expected_shape_zyx must be three positive sizes, not {shape_zyx}")
        allowed = self._allowed_labels(job_id, categories)
        max_bytes = int(np.prod(shape_zyx)) + RESULT_OVERHEAD_BYTES
        _, body = self._request(
            "GET",
            f"/v1/jobs/{job_id}/result",
            expected_statuses=(200,),
            max_body_bytes=max_bytes,
            expected_content_type=RESULT_CONTENT_TYPE,
        )
        result = _parse_result(body, shape_zyx=shape_zyx, allowed=allowed, max_bytes=max_bytes)
        logger.info("inference job %s result fetched: labels %s", job_id, list(result.labels))
        return result

    def cancel(self, job_id: str) -> None:
        """Cancel the job; a job that already finished is left as it is."""
        _check_job_id(job_id)
        status_code, _ = self._request(
            "DELETE",
            f"/v1/jobs/{job_id}",
            expected_statuses=(200, 202, 204, 409),
            max_body_bytes=MAX_JSON_BYTES,
        )
        if status_code == 409:
            logger.info("inference job %s not cancelled: it already finished", job_id)
        else:
            logger.info("inference job %s cancelled", job_id)

    def _allowed_labels(self, job_id: str, categories: Sequence[int] | None) -> frozenset[int]:
        if categories is None:
            with self._categories_lock:
                categories = self._categories_by_job.get(job_id, ())
        requested = frozenset(int(value) for value in categories)
        return (requested or self._catalogue_values) & self._catalogue_values

    def _jitter(self, delay_s: float) -> float:
        return self._random.uniform(delay_s / 2, delay_s)

    def _request(
        self,
        method: str,
        path: str,
        *,
        expected_statuses: tuple[int, ...],
        max_body_bytes: int,
        headers: dict[str, str] | None = None,
        build_body: Callable[[], dict] | None = None,
        expected_content_type: str | None = None,
    ) -> tuple[int, bytes]:
        """Send one request with retries and return the status code and the body.

        The body is read inside the retry loop, so a connection that drops mid-download
        is retried as well. ``build_body`` is called before every attempt, because a
        multipart upload consumes its file.
        """
        url = self._base_url + path
        request_headers = {"Authorization": f"Bearer {self._token}", **(headers or {})}
        attempts = self._max_retries + 1
        for attempt in range(1, attempts + 1):
            retry_after_s = None
            try:
                with self._session.request(
                    method,
                    url,
                    headers=request_headers,
                    timeout=self._timeout,
                    stream=True,
                    **(build_body() if build_body else {}),
                ) as response:
                    status_code = response.status_code
                    if status_code == 429 or status_code >= 500:
                        problem = f"HTTP {status_code}"
                        retry_after_s = _parse_retry_after(response.headers.get("Retry-After"))
                    else:
                        if expected_content_type is not None and status_code in expected_statuses:
                            _check_content_type(response, expected_content_type)
                        body = _read_body(response, max_body_bytes)
                        if status_code in expected_statuses:
                            return status_code, body
                        raise _rejected(method, path, status_code, body)
            except (
                requests.ConnectionError,
                requests.Timeout,
                requests.exceptions.ChunkedEncodingError,
            ) as error:
                problem = type(error).__name__

            if attempt == attempts:
                break
            delay_s = self._backoff_delay(attempt, retry_after_s)
            logger.warning(
                "inference %s %s failed (%s); retry %d of %d in %.2f s",
                method,
                path,
                problem,
                attempt,
                self._max_retries,
                delay_s,
            )
            time.sleep(delay_s)

        logger.error(
            "inference %s %s failed after %d attempts: %s", method, path, attempts, problem
        )
        raise InferenceError(
            INFERENCE_UNAVAILABLE,
            "The inference service is unavailable: {method} {path} failed after {attempts} "
            "attempts ({problem}).",
            params={"method": method, "path": path, "attempts": attempts, "problem": problem},
        )

    def _backoff_delay(self, attempt: int, retry_after_s: float | None) -> float:
        if retry_after_s is not None:
            return retry_after_s
        delay_s = min(self._retry_initial_s * 2 ** (attempt - 1), self._retry_max_s)
        return self._jitter(delay_s)


def _check_job_id(job_id: str) -> None:
    if not isinstance(job_id, str) or not JOB_ID_PATTERN.match(job_id):
        raise ValueError(f"invalid inference job id: {job_id!r}")


def _parse_retry_after(value: str | None) -> float | None:
    """Return a Retry-After header (seconds or an HTTP date) in seconds, capped."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        seconds = float(value)
    else:
        try:
            moment = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        seconds = (moment - datetime.now(UTC)).total_seconds()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


def _check_content_type(response: requests.Response, expected: str) -> None:
    content_type = response.headers.get("Content-Type", "")
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type != expected:
        raise _bad_response(
            "result", f"content type is {content_type or 'missing'}, expected {expected}"
        )


def _read_body(response: requests.Response, max_bytes: int) -> bytes:
    declared = response.headers.get("Content-Length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise _bad_response("response", f"Content-Length {declared} exceeds {max_bytes} bytes")
    buffer = bytearray()
    for chunk in response.iter_content(chunk_size=1024 * 1024):
        buffer.extend(chunk)
        if len(buffer) > max_bytes:
            raise _bad_response("response", f"body exceeds {max_bytes} bytes")
    return bytes(buffer)


def _rejected(method: str, path: str, status_code: int, body: bytes) -> InferenceError:
    provider_code = provider_message = None
    try:
        document = json.loads(body)
    except ValueError:
        document = None
    if isinstance(document, dict):
        if isinstance(document.get("code"), str):
            provider_code = document["code"]
        if isinstance(document.get("message"), str):
            provider_message = document["message"]
    return InferenceError(
        INFERENCE_REJECTED,
        "The inference service rejected {method} {path} with HTTP {status}: "
        "{provider_code}: {provider_message}",
        params={
            "method": method,
            "path": path,
            "status": status_code,
            "provider_code": provider_code,
            "provider_message": provider_message,
        },
        provider_code=provider_code,
        http_status=status_code,
    )


def _bad_response(what: str, problem: str) -> InferenceError:
    return InferenceError(
        INFERENCE_BAD_RESPONSE,
        "The inference service sent an invalid {what}: {problem}.",
        params={"what": what, "problem": problem},
    )


def _parse_json_object(body: bytes, *, what: str) -> dict:
    try:
        document = json.loads(body)
    except ValueError:
        raise _bad_response(what, "the body is not JSON") from None
    if not isinstance(document, dict):
        raise _bad_response(what, "the JSON body is not an object")
    return document


def _parse_status(document: dict) -> JobStatus:
    status = document.get("status")
    if status not in JOB_STATUSES:
        raise _bad_response("job status", f"unknown status {status!r}")
    progress = document.get("progress")
    if (
        isinstance(progress, bool)
        or not isinstance(progress, int | float)
        or not 0 <= progress <= 100
    ):
        raise _bad_response("job status", f"progress {progress!r} is not a number in 0..100")
    error = document.get("error")
    error_code = error_message = None
    if error is not None:
        if not isinstance(error, dict) or not isinstance(error.get("code"), str):
            raise _bad_response("job status", "error is neither null nor an object with a code")
        error_code = error["code"]
        message = error.get("message")
        error_message = message if isinstance(message, str) else None
    return JobStatus(
        status=status,
        progress=int(progress),
        error_code=error_code,
        error_message=error_message,
    )


def _parse_result(
    body: bytes, *, shape_zyx: tuple[int, ...], allowed: frozenset[int], max_bytes: int
) -> InferenceResult:
    try:
        with zipfile.ZipFile(io.BytesIO(body)) as archive:
            uncompressed_bytes = sum(member.file_size for member in archive.infolist())
    except zipfile.BadZipFile:
        raise _bad_response("result", "the body is not an NPZ (ZIP) file") from None
    if uncompressed_bytes > max_bytes:
        raise _bad_response(
            "result", f"the NPZ unpacks to {uncompressed_bytes} bytes, more than {max_bytes}"
        )
    try:
        with np.load(io.BytesIO(body), allow_pickle=False) as npz:
            missing = {"mask", "labels"} - set(npz.files)
            if missing:
                raise _bad_response("result", f"the NPZ lacks {sorted(missing)}")
            mask = npz["mask"]
            labels = npz["labels"]
    except ValueError as error:
        # numpy raises ValueError when an array would need pickle to load.
        raise _bad_response(
            "result", f"the NPZ cannot be loaded without pickle ({error})"
        ) from None
    except (OSError, EOFError, zipfile.BadZipFile) as error:
        raise _bad_response("result", f"the NPZ cannot be read ({error})") from None

    if mask.dtype != np.uint8:
        raise _bad_response("result", f"mask dtype is {mask.dtype}, expected uint8")
    if mask.shape != shape_zyx:
        raise _bad_response("result", f"mask shape is {mask.shape}, expected {shape_zyx}")
    if labels.dtype != np.int32 or labels.ndim != 1:
        raise _bad_response(
            "result", f"labels must be a 1-D int32 array, not {labels.dtype} {labels.shape}"
        )
    label_values = sorted(int(value) for value in labels)
    if len(set(label_values)) != len(label_values) or 0 in label_values:
        raise _bad_response("result", f"labels {label_values} repeat a value or contain 0")
    not_allowed = sorted(set(label_values) - allowed)
    if not_allowed:
        raise _bad_response(
            "result", f"labels {not_allowed} were not requested (requested {sorted(allowed)})"
        )
    present = {int(value) for value in np.unique(mask)} - {0}
    if present != set(label_values):
        raise _bad_response(
            "result", f"mask contains label values {sorted(present)} but labels is {label_values}"
        )
    return InferenceResult(mask=mask, labels=tuple(label_values))
