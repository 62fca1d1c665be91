"""Client of the external inference API that segments study volumes."""

from portal.inference.client import (
    InferenceClient,
    InferenceError,
    InferenceResult,
    InferenceTimeout,
    JobStatus,
)

__all__ = ["InferenceClient", "InferenceError", "InferenceResult", "InferenceTimeout", "JobStatus"]
