"""Errors of the inference client, each with a stable code for the study's error_code."""

INFERENCE_UNAVAILABLE = "inference_unavailable"
INFERENCE_REJECTED = "inference_rejected"
INFERENCE_FAILED = "inference_failed"
INFERENCE_TIMEOUT = "inference_timeout"
INFERENCE_BAD_RESPONSE = "inference_bad_response"


class InferenceError(Exception):
    """A failed call to the inference API.

    ``code`` is one of the stable codes above. ``message`` is an English format string with
    named placeholders filled from ``params``, so the portal can translate it before
    formatting. ``provider_code`` is the provider's own error code when it sent one (for
    example ``modality_not_supported``) and ``http_status`` the HTTP status when there was
    a response.
    """

    def __init__(
        self,
        code: str,
        message: str,
        *,
        params: dict | None = None,
        provider_code: str | None = None,
        http_status: int | None = None,
    ):
        self.code = code
        self.message = message
        self.params = dict(params or {})
        self.provider_code = provider_code
        self.http_status = http_status
        super().__init__(self.message.format(**self.params))


class InferenceTimeout(InferenceError):
    """A job that did not reach a final status within the client's job timeout."""

    def __init__(self, job_id: str, timeout_s: float, last_status: str | None):
        super().__init__(
            INFERENCE_TIMEOUT,
            "Inference job {job_id} did not finish within {timeout_s} s "
            "(last status: {last_status}).",
            params={"job_id": job_id, "timeout_s": timeout_s, "last_status": last_status},
        )
