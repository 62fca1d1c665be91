"""Studies, their processing attempts and the artifacts each attempt stores."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime

from flask_babel import lazy_gettext as _l
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.db_types import UTCDateTime, new_uuid, string_enum, utcnow
from portal.extensions import db


class StudyStatus(enum.StrEnum):
    UPLOADED = "uploaded"
    CONVERTING = "converting"
    INFERENCE_QUEUED = "inference_queued"
    INFERENCE_RUNNING = "inference_running"
    WRITING_RESULTS = "writing_results"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES

    @property
    def title(self) -> str:
        return str(STATUS_TITLES[self])

    @property
    def badge(self) -> str:
        """Return the CSS modifier of the status badge."""
        if self is StudyStatus.SUCCEEDED:
            return "success"
        if self is StudyStatus.FAILED:
            return "danger"
        if self is StudyStatus.CANCELLED:
            return "muted"
        return "progress"


TERMINAL_STATUSES = frozenset({StudyStatus.SUCCEEDED, StudyStatus.FAILED, StudyStatus.CANCELLED})

#: Statuses in which an attempt waits for a worker to pick up its next step.
WAITING_STATUSES = frozenset({StudyStatus.UPLOADED, StudyStatus.INFERENCE_QUEUED})

#: The allowed moves of an attempt; terminal states allow none.
TRANSITIONS: dict[StudyStatus, frozenset[StudyStatus]] = {
    StudyStatus.UPLOADED: frozenset({StudyStatus.CONVERTING}),
    StudyStatus.CONVERTING: frozenset({StudyStatus.INFERENCE_QUEUED}),
    StudyStatus.INFERENCE_QUEUED: frozenset({StudyStatus.INFERENCE_RUNNING}),
    # Back to the queue when the provider is unavailable: waiting uses up no attempt.
    StudyStatus.INFERENCE_RUNNING: frozenset(
        {StudyStatus.WRITING_RESULTS, StudyStatus.INFERENCE_QUEUED}
    ),
    StudyStatus.WRITING_RESULTS: frozenset({StudyStatus.SUCCEEDED}),
    StudyStatus.SUCCEEDED: frozenset(),
    StudyStatus.FAILED: frozenset(),
    StudyStatus.CANCELLED: frozenset(),
}

STATUS_TITLES = {
    StudyStatus.UPLOADED: _l("Uploaded"),
    StudyStatus.CONVERTING: _l("Converting DICOM"),
    StudyStatus.INFERENCE_QUEUED: _l("Waiting for the segmentation service"),
    StudyStatus.INFERENCE_RUNNING: _l("Segmenting"),
    StudyStatus.WRITING_RESULTS: _l("Writing results"),
    StudyStatus.SUCCEEDED: _l("Done"),
    StudyStatus.FAILED: _l("Failed"),
    StudyStatus.CANCELLED: _l("Cancelled"),
}

#: Progress shown on entering each status, in percent; the inference step fills 40-90.
STATUS_PROGRESS = {
    StudyStatus.UPLOADED: 0,
    StudyStatus.CONVERTING: 10,
    StudyStatus.INFERENCE_QUEUED: 35,
    StudyStatus.INFERENCE_RUNNING: 40,
    StudyStatus.WRITING_RESULTS: 92,
    StudyStatus.SUCCEEDED: 100,
}


#: The stages a study passes through on its way to a result, in order.
PIPELINE_STAGES = [
    StudyStatus.UPLOADED,
    StudyStatus.CONVERTING,
    StudyStatus.INFERENCE_QUEUED,
    StudyStatus.INFERENCE_RUNNING,
    StudyStatus.WRITING_RESULTS,
]


class InvalidTransition(RuntimeError):
    pass


class ArtifactKind(enum.StrEnum):
    UPLOAD = "upload"
    VOLUME_NPZ = "volume_npz"
    IMAGE_NIFTI = "image_nifti"
    MASK_NIFTI = "mask_nifti"
    REPORT_JSON = "report_json"
    #: The chosen series at its own resolution, and the mask resampled onto it.
    NATIVE_NIFTI = "native_nifti"
    MASK_NATIVE_NIFTI = "mask_native_nifti"


#: Object names under the study's or attempt's storage prefix.
ARTIFACT_FILE_NAMES = {
    ArtifactKind.UPLOAD: "upload.zip",
    ArtifactKind.VOLUME_NPZ: "volume.npz",
    ArtifactKind.IMAGE_NIFTI: "image.nii.gz",
    ArtifactKind.MASK_NIFTI: "mask.nii.gz",
    ArtifactKind.REPORT_JSON: "report.json",
    ArtifactKind.NATIVE_NIFTI: "native.nii.gz",
    ArtifactKind.MASK_NATIVE_NIFTI: "mask_native.nii.gz",
}


#: Health protection by health professionals, LGPD art. 11 II f.
DEFAULT_LEGAL_BASIS = "health_protection"


class Study(db.Model):
    __tablename__ = "study"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_uuid)
    clinic_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("clinic.id"), index=True)
    uploaded_by_user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("user_account.id"))
    uploaded_by_api_key_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("api_key.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    #: Category keys the uploader asked for; empty means every category the provider supports.
    requested_categories: Mapped[list] = mapped_column(JSON, default=list)
    upload_size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    upload_sha256: Mapped[str] = mapped_column(String(64), default="")
    #: Filled by conversion from the chosen series.
    modality: Mapped[str | None] = mapped_column(String(16))
    series_description: Mapped[str | None] = mapped_column(String(200))
    slice_count: Mapped[int | None] = mapped_column(Integer)
    #: Patient identifiers sealed by `portal.privacy.crypto` (AES-GCM bound to the study id
    #: and the column name); None when absent or erased. Never stored in clear.
    patient_name_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    patient_id_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    birth_date_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    accession_number_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    upload_file_name_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    #: Keyed HMAC-SHA256 of the normalized patient ID, for search by patient ID.
    patient_id_hash: Mapped[str | None] = mapped_column(String(64), index=True)
    #: A code of `portal.privacy.legal_basis.LEGAL_BASES`, chosen at upload.
    legal_basis: Mapped[str] = mapped_column(
        String(32), default=DEFAULT_LEGAL_BASIS, server_default=DEFAULT_LEGAL_BASIS
    )
    #: When the raw upload and the inference input were deleted; the study cannot run again.
    raw_data_deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: When a data subject asked for erasure; what remains is kept under a legal duty.
    erasure_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: A legal hold stops every deletion by retention until an admin lifts it.
    is_on_legal_hold: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    #: When the retention task deleted the results at the end of the retention period.
    results_expired_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: Set when the study was deleted; the row stays as a record of who deleted it.
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    deleted_by_user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("user_account.id"))
    deleted_by_api_key_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("api_key.id"))

    uploaded_by_user = relationship("User", foreign_keys=[uploaded_by_user_id])
    uploaded_by_api_key = relationship("ApiKey", foreign_keys=[uploaded_by_api_key_id])
    attempts: Mapped[list[Attempt]] = relationship(
        back_populates="study", order_by="Attempt.number", cascade="all, delete-orphan"
    )
    artifacts: Mapped[list[Artifact]] = relationship(
        back_populates="study", cascade="all, delete-orphan"
    )

    @property
    def is_deleted(self) -> bool:
        return self.deleted_at is not None

    @property
    def latest_attempt(self) -> Attempt | None:
        return self.attempts[-1] if self.attempts else None

    @property
    def status(self) -> StudyStatus:
        attempt = self.latest_attempt
        return attempt.status if attempt else StudyStatus.UPLOADED

    @property
    def latest_successful_attempt(self) -> Attempt | None:
        for attempt in reversed(self.attempts):
            if attempt.status == StudyStatus.SUCCEEDED:
                return attempt
        return None

    @property
    def stages(self) -> list[tuple[str, str]]:
        """Return each processing stage's title with "done", "current", "pending" or "failed".

        A failed or cancelled study marks the stage it stopped in; the last stage is done
        only when the study succeeded.
        """
        status = self.status
        attempt = self.latest_attempt
        stopped_in = status
        if status in (StudyStatus.FAILED, StudyStatus.CANCELLED):
            # The progress shows how far the attempt came before it stopped.
            progress = attempt.progress if attempt else 0
            reached = [stage for stage in PIPELINE_STAGES if STATUS_PROGRESS[stage] <= progress]
            stopped_in = reached[-1] if reached else StudyStatus.UPLOADED
        rows = []
        position = PIPELINE_STAGES.index(stopped_in) if stopped_in in PIPELINE_STAGES else -1
        for index, stage in enumerate(PIPELINE_STAGES):
            if status == StudyStatus.SUCCEEDED or index < position:
                state = "done"
            elif index == position:
                state = (
                    "failed" if status in (StudyStatus.FAILED, StudyStatus.CANCELLED) else "current"
                )
            else:
                state = "pending"
            rows.append((stage.title, state))
        return rows

    @property
    def uploader_name(self) -> str:
        if self.uploaded_by_user is not None:
            return self.uploaded_by_user.display_name or self.uploaded_by_user.email
        if self.uploaded_by_api_key is not None:
            return self.uploaded_by_api_key.name
        return ""

    def artifact(self, kind: ArtifactKind, attempt: Attempt | None = None) -> Artifact | None:
        for artifact in self.artifacts:
            if artifact.kind == kind and artifact.attempt_id == (attempt.id if attempt else None):
                return artifact
        return None


class Attempt(db.Model):
    """One run of the pipeline on a study, moved through `StudyStatus` by `move_to`."""

    __tablename__ = "attempt"
    __table_args__ = (UniqueConstraint("study_id", "number"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_uuid)
    study_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("study.id"), index=True)
    clinic_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("clinic.id"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    status: Mapped[StudyStatus] = mapped_column(
        string_enum(StudyStatus, length=32), default=StudyStatus.UPLOADED, index=True
    )
    progress: Mapped[int] = mapped_column(Integer, default=0)
    #: A stable code from the error catalogue; the message is translated when shown.
    error_code: Mapped[str | None] = mapped_column(String(64))
    #: Safe, non-identifying context for the message placeholders (JSON object).
    error_detail: Mapped[dict | None] = mapped_column(JSON)
    #: The series the user asked for; None lets the pipeline choose.
    requested_series_id: Mapped[str | None] = mapped_column(String(64))
    chosen_series_id: Mapped[str | None] = mapped_column(String(64))
    #: The conversion report: series found, the one chosen and why (no patient data).
    report: Mapped[dict | None] = mapped_column(JSON)
    #: Per-label voxel counts and volumes of the result mask.
    label_stats: Mapped[list | None] = mapped_column(JSON)
    inference_job_id: Mapped[str | None] = mapped_column(String(128))
    #: A token unique to the worker step holding the attempt; renewed until `lease_expires_at`.
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: How many times a step of this attempt was taken over after its worker stopped.
    recovery_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    #: When the attempt started waiting for a worker or for the provider.
    queued_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=utcnow)
    created_by_user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("user_account.id"))
    created_by_api_key_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("api_key.id"))
    cancelled_by_user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("user_account.id"))
    cancelled_by_api_key_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("api_key.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    study: Mapped[Study] = relationship(back_populates="attempts")
    artifacts: Mapped[list[Artifact]] = relationship(back_populates="attempt")
    created_by_user = relationship("User", foreign_keys=[created_by_user_id])
    created_by_api_key = relationship("ApiKey", foreign_keys=[created_by_api_key_id])

    @property
    def series_id(self) -> str | None:
        """Return the series converted, or the one requested before conversion ran."""
        return self.chosen_series_id or self.requested_series_id

    @property
    def started_by_name(self) -> str:
        if self.created_by_user is not None:
            return self.created_by_user.display_name or self.created_by_user.email
        if self.created_by_api_key is not None:
            return self.created_by_api_key.name
        return self.study.uploader_name if self.number == 1 else ""

    def move_to(self, status: StudyStatus) -> None:
        """Move to `status`, refusing moves the state machine does not allow."""
        if status in (StudyStatus.FAILED, StudyStatus.CANCELLED):
            allowed = not self.status.is_terminal
        else:
            allowed = status in TRANSITIONS[self.status]
        if not allowed:
            raise InvalidTransition(f"attempt {self.id}: {self.status} -> {status} is not allowed")
        self.status = status
        now = utcnow()
        if status == StudyStatus.CONVERTING:
            self.started_at = now
        if status in STATUS_PROGRESS:
            self.progress = STATUS_PROGRESS[status]
        if status in WAITING_STATUSES or status.is_terminal:
            self.lease_owner = None
            self.lease_expires_at = None
        if status.is_terminal:
            self.finished_at = now

    def fail(self, code: str, detail: dict | None = None) -> None:
        self.move_to(StudyStatus.FAILED)
        self.error_code = code
        self.error_detail = detail or {}

    def cancel(self, *, user_id: uuid.UUID | None = None, api_key_id: uuid.UUID | None = None):
        """Move to cancelled and record who asked; the running step notices at its next check."""
        self.move_to(StudyStatus.CANCELLED)
        self.cancelled_by_user_id = user_id
        self.cancelled_by_api_key_id = api_key_id


class Artifact(db.Model):
    """An object in storage that belongs to a study (the upload) or to one attempt."""

    __tablename__ = "artifact"
    #: One object of each kind per attempt, so a step that runs twice cannot add a second.
    __table_args__ = (UniqueConstraint("attempt_id", "kind"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_uuid)
    study_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("study.id"), index=True)
    attempt_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("attempt.id"), index=True)
    clinic_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("clinic.id"), index=True)
    kind: Mapped[ArtifactKind] = mapped_column(string_enum(ArtifactKind, length=32))
    storage_key: Mapped[str] = mapped_column(Text)
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    content_type: Mapped[str] = mapped_column(String(100), default="application/octet-stream")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    study: Mapped[Study] = relationship(back_populates="artifacts")
    attempt: Mapped[Attempt | None] = relationship(back_populates="artifacts")


class UploadIdempotencyKey(db.Model):
    """An `Idempotency-Key` a client sent with an upload, and the study it created.

    Keys are unique per clinic. The fingerprint covers the ZIP's SHA-256 and the requested
    categories, so a retry of the same upload is recognised and a reused key is not.
    """

    __tablename__ = "upload_idempotency_key"
    __table_args__ = (UniqueConstraint("clinic_id", "key"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_uuid)
    clinic_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("clinic.id"), index=True)
    key: Mapped[str] = mapped_column(String(255))
    #: SHA-256 (hex) over the upload's SHA-256 and its sorted category keys.
    request_fingerprint: Mapped[str] = mapped_column(String(64))
    study_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("study.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    study: Mapped[Study] = relationship()
