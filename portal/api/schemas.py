"""Request and response schemas of the JSON API, as pydantic models.

SpecTree validates requests and responses with these models and builds the OpenAPI 3.1
document from their JSON Schema. Request models forbid unknown fields, so a misspelt
field is rejected instead of being silently ignored. Response models describe what the
views already send; they validate it but do not reshape it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, RootModel
from spectree.model_adapter.pydantic_adapter import BaseFile

from portal.privacy.legal_basis import LEGAL_BASES
from portal.studies.models import DEFAULT_LEGAL_BASIS, StudyStatus

#: The largest page of studies one request may ask for.
MAX_PAGE_SIZE = 100
DEFAULT_PAGE_SIZE = 20

UUID_TEXT = Annotated[str, Field(description="A UUID in its canonical text form.")]


class RequestModel(BaseModel):
    """Base of request models: an unknown field is a validation error."""

    model_config = ConfigDict(extra="forbid")


class ResponseModel(BaseModel):
    """Base of response models."""


# Errors


class FieldError(ResponseModel):
    field: str = Field(
        description="Where the invalid value is: the field name, with list indexes and "
        "nested names joined by dots (`categories.0`)."
    )
    location: Literal["query", "body", "form", "header", "path"] = Field(
        description="The part of the request that contains the field."
    )
    code: str = Field(
        description="Stable code of the problem: `unknown_field`, `missing`, `invalid_type`, "
        "`too_small`, `too_large`, `too_long`, `invalid_choice`, `invalid_value`."
    )
    message: str = Field(description="What is wrong, in the request's language.")


class Problem(ResponseModel):
    """An error in the RFC 9457 `application/problem+json` format."""

    type: str = Field(description="A path that identifies the kind of problem.")
    title: str = Field(description="A short summary of the problem, in the request's language.")
    status: int = Field(description="The HTTP status code.")
    detail: str = Field(description="What went wrong and what to do, in the request's language.")
    code: str = Field(description="Stable machine-readable code of the problem.")
    errors: list[FieldError] | None = Field(
        default=None, description="Each invalid field, present when `code` is `validation_failed`."
    )


# Health and categories


class HealthQuery(RequestModel):
    ready: str | None = Field(
        default=None,
        max_length=10,
        description="`1`, `true` or `yes` to check every dependency (readiness) instead of "
        "returning at once (liveness).",
    )


class Health(ResponseModel):
    status: Literal["ok", "degraded"] = Field(
        description="`ok`, or `degraded` when a readiness check failed."
    )
    checks: dict[str, bool] | None = Field(
        default=None,
        description="Readiness only: each dependency (database, queue, storage, inference) "
        "and whether it responded within 2 s.",
    )


class Category(ResponseModel):
    value: int = Field(description="The label value of the category in result masks.")
    key: str = Field(description="The key to send in an upload's `categories`.")
    name: str = Field(description="The category's name in the request's language.")
    color: str = Field(description="The colour the viewer draws it in, as `#rrggbb`.")
    snomed_ct: str | None = Field(description="The SNOMED CT concept id of the structure.")


class CategoryList(RootModel[list[Category]]):
    """Every segmentation category."""


# Studies


class StudyError(ResponseModel):
    code: str = Field(description="Stable code of the study's failure.")
    message: str = Field(description="What failed and what to do, in the request's language.")


class ReportSeries(ResponseModel):
    series_id: str | None = Field(description="Stable id of the series, for `rerun`.")
    series_number: int | None = Field(description="DICOM Series Number (0020,0011).")
    modality: str | None = Field(description="DICOM Modality (0008,0060), such as `CT`.")
    description: str | None = Field(description="DICOM Series Description (0008,103E).")
    slices: int | None = Field(description="Number of slices of the volume.")
    pixel_spacing_mm: list[float] | None = Field(
        description="Row and column spacing in millimetres."
    )
    slice_step_mm: float | None = Field(
        description="Median distance between slices in millimetres."
    )
    orientation: str | None = Field(
        description="The patient plane closest to the slices: `axial`, `coronal`, `sagittal`, "
        "or `oblique` when none is within about 35 degrees."
    )
    chosen: bool = Field(description="Whether this series was converted.")
    reason_code: str | None = Field(description="Stable code of why it was chosen or skipped.")
    reason: str | None = Field(description="Why it was chosen or skipped, translated.")


class ReportWarning(ResponseModel):
    code: str | None = Field(description="Stable code of the warning.")
    member_index: int | None = Field(
        description="Index of the file in the ZIP the warning is about (never its name)."
    )
    message: str = Field(description="The warning, translated.")


class IngestionReport(ResponseModel):
    series: list[ReportSeries] = Field(description="Every series found in the ZIP.")
    chosen_series_id: str | None = Field(description="The series that was converted.")
    warnings: list[ReportWarning] = Field(description="Problems that did not stop the study.")
    window: dict[str, Any] | None = Field(
        description="The intensity window applied before inference: `{kind: ct, center, "
        "width}` in HU, or `{kind: percentile, low, high}` for MR."
    )


class StudyLinks(ResponseModel):
    self_: str = Field(alias="self", description="Path of the study.")
    status: str = Field(description="Path of the study's status.")
    result: str = Field(description="Path of the study's result.")


class PatientIdentifiers(ResponseModel):
    patient_name: str | None = Field(description="DICOM Patient's Name (0010,0010).")
    patient_id: str | None = Field(description="DICOM Patient ID (0010,0020).")
    birth_date: str | None = Field(description="DICOM Patient's Birth Date (0010,0030).")
    accession_number: str | None = Field(description="DICOM Accession Number (0008,0050).")
    file_name: str | None = Field(description="The uploaded file's name.")


class Retention(ResponseModel):
    raw_data_deleted_at: datetime | None = Field(
        description="When the upload and the inference input were deleted, or null."
    )
    raw_data_delete_after: datetime | None = Field(
        description="When they will be deleted; null once deleted or while an attempt runs."
    )
    results_expire_at: datetime | None = Field(
        description="When the results reach the end of the clinic's retention period."
    )
    legal_hold: bool = Field(description="True while a legal hold stops every deletion.")
    erasure_requested_at: datetime | None = Field(
        description="When an erasure request for the patient reached this study, or null."
    )
    can_run_again: bool = Field(description="False once the upload was deleted.")


class Study(ResponseModel):
    id: UUID_TEXT
    status: StudyStatus = Field(description="Status of the study's latest attempt.")
    created_at: datetime = Field(description="When the ZIP was uploaded (UTC).")
    modality: str | None = Field(description="DICOM Modality of the chosen series.")
    series_description: str | None = Field(description="Description of the chosen series.")
    slice_count: int | None = Field(description="Number of slices of the chosen series.")
    categories: list[str] = Field(description="Keys of the requested categories.")
    legal_basis: str = Field(description="The legal basis declared at upload (LGPD art. 11 II).")
    patient: PatientIdentifiers = Field(
        description="The patient identifiers read from the DICOM, and the upload's file name; "
        "stored encrypted and returned only to the clinic's own members and API keys."
    )
    retention: Retention = Field(description="What the study keeps, and until when.")
    attempt: int | None = Field(description="Number of the latest attempt, from 1.")
    report: IngestionReport | None = Field(
        description="The latest attempt's ingestion report, once conversion has read the ZIP."
    )
    links: StudyLinks = Field(description="Paths of related resources.")
    progress: int | None = Field(
        default=None,
        ge=0,
        le=100,
        description="Progress of the latest attempt in percent (on `GET /api/studies/{id}/`).",
    )

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "0b7c6a4e-2f1d-4c1e-9a57-5d1f3e2a9c10",
                    "status": "uploaded",
                    "created_at": "2026-03-02T14:05:09.123456+00:00",
                    "modality": None,
                    "series_description": None,
                    "slice_count": None,
                    "categories": ["lung", "bone"],
                    "legal_basis": "health_protection",
                    "patient": {
                        "patient_name": None,
                        "patient_id": None,
                        "birth_date": None,
                        "accession_number": None,
                        "file_name": "study.zip",
                    },
                    "retention": {
                        "raw_data_deleted_at": None,
                        "raw_data_delete_after": None,
                        "results_expire_at": None,
                        "legal_hold": False,
                        "erasure_requested_at": None,
                        "can_run_again": True,
                    },
                    "attempt": 1,
                    "report": None,
                    "links": {
                        "self": "/api/studies/0b7c6a4e-2f1d-4c1e-9a57-5d1f3e2a9c10/",
                        "status": "/api/studies/0b7c6a4e-2f1d-4c1e-9a57-5d1f3e2a9c10/status/",
                        "result": "/api/studies/0b7c6a4e-2f1d-4c1e-9a57-5d1f3e2a9c10/result/",
                    },
                }
            ]
        }
    )


def _as_list(value: Any) -> Any:
    """Wrap a single form value in a list: SpecTree keeps a field sent once as plain text."""
    return [value] if isinstance(value, str) else value


class StudyUpload(RequestModel):
    file: BaseFile = Field(
        description="The study: a ZIP of DICOM files, up to the portal's upload limit."
    )
    categories: Annotated[list[str], BeforeValidator(_as_list)] = Field(
        default_factory=list,
        max_length=50,
        description="Category keys to segment, repeated once per key (see "
        "`GET /api/auth/categories/`). Absent: every category.",
    )
    legal_basis: str | None = Field(
        default=None,
        max_length=64,
        description="The legal basis of the processing (LGPD art. 11 II), one of "
        + ", ".join(f"`{code}`" for code in LEGAL_BASES)
        + f". Absent: `{DEFAULT_LEGAL_BASIS}` (art. 11 II f). Another value is rejected "
        "with 400 `invalid_legal_basis`.",
    )

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "file": "study.zip",
                    "categories": ["lung", "bone"],
                    "legal_basis": DEFAULT_LEGAL_BASIS,
                }
            ]
        },
    )


class UploadHeaders(BaseModel):
    idempotency_key: str | None = Field(
        default=None,
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        pattern=r"^[\x21-\x7e]+$",
        description="A client-chosen key (1 to 255 visible ASCII characters) that makes the "
        "upload safe to retry: the same key with the same ZIP and categories returns the "
        "study created first (200); with another upload it is rejected (409).",
        examples=["ris-exam-20260302-0042"],
    )


class StudyListQuery(RequestModel):
    limit: int = Field(
        default=DEFAULT_PAGE_SIZE,
        ge=1,
        le=MAX_PAGE_SIZE,
        description=f"Studies per page, 1 to {MAX_PAGE_SIZE}.",
    )
    cursor: str | None = Field(
        default=None,
        max_length=200,
        description="The opaque cursor of the `next` link of the previous page.",
    )
    status: list[StudyStatus] | None = Field(
        default=None, description="Only studies in these statuses (repeat the parameter)."
    )
    created_after: AwareDatetime | None = Field(
        default=None,
        description="Only studies uploaded at or after this time (RFC 3339 with an offset).",
    )
    created_before: AwareDatetime | None = Field(
        default=None,
        description="Only studies uploaded before this time (RFC 3339 with an offset).",
    )


class StudyPage(ResponseModel):
    items: list[Study] = Field(description="The studies of this page, newest first.")
    limit: int = Field(description="The page size used.")
    next: str | None = Field(
        description="Path of the next page with the same filters, or null on the last page."
    )


class StudyStatusBody(ResponseModel):
    id: UUID_TEXT
    status: StudyStatus = Field(description="Status of the latest attempt.")
    status_title: str = Field(description="The status in the request's language.")
    progress: int = Field(ge=0, le=100, description="Progress of the latest attempt in percent.")
    attempt: int | None = Field(description="Number of the latest attempt.")
    queue_position: int | None = Field(
        description="Position in the shared queue while waiting, 1 being next."
    )
    estimated_seconds_remaining: int | None = Field(
        description="An estimate from the clinic's recent studies, not a promise."
    )
    delayed: bool = Field(
        description="Whether processing is held up (provider down or queue stuck)."
    )
    error: StudyError | None = Field(description="Why the latest attempt failed, or null.")


class Label(ResponseModel):
    value: int = Field(description="Label value in the mask.")
    key: str = Field(description="Category key.")
    name: str = Field(description="Category name in the request's language.")
    color: str = Field(description="Display colour as `#rrggbb`.")
    voxel_count: int = Field(description="Number of voxels with this label.")
    volume_ml: float = Field(description="Volume of the label in millilitres.")


class StudyResult(ResponseModel):
    id: UUID_TEXT
    image_url: str = Field(description="Presigned URL of the image (NIfTI, `.nii.gz`).")
    mask_url: str = Field(description="Presigned URL of the label mask on the image's grid.")
    expires_at: datetime = Field(description="When both URLs stop working (at most 300 s).")
    labels: list[Label] = Field(description="Each label present in the mask.")


class EmptyRequest(RequestModel):
    """No fields: the body is optional, and when sent it must be an empty JSON object."""


class RerunRequest(RequestModel):
    series_id: str | None = Field(
        default=None,
        max_length=64,
        description="Convert this series (an id from the report) instead of the usual choice.",
    )


class Actor(ResponseModel):
    user_id: str | None = Field(description="The user who acted, if a user did.")
    api_key_id: str | None = Field(description="The API key that acted, if a key did.")


class AttemptBody(ResponseModel):
    number: int = Field(description="Attempt number, from 1.")
    status: StudyStatus = Field(description="Status of the attempt.")
    status_title: str = Field(description="The status in the request's language.")
    created_at: datetime = Field(description="When the attempt was created.")
    started_at: datetime | None = Field(description="When conversion started.")
    finished_at: datetime | None = Field(description="When the attempt ended.")
    requested_series_id: str | None = Field(description="The series a caller asked for.")
    series_id: str | None = Field(description="The series that was converted.")
    error: StudyError | None = Field(description="Why the attempt failed, or null.")
    started_by: Actor = Field(description="Who started the attempt.")
    cancelled_by: Actor = Field(
        description="Who cancelled the attempt; both fields are null when it was not cancelled."
    )


class AttemptList(ResponseModel):
    id: UUID_TEXT
    attempts: list[AttemptBody] = Field(description="Every attempt, oldest first.")


class StudyReport(ResponseModel):
    id: UUID_TEXT
    attempt: int | None = Field(description="Number of the attempt the report belongs to.")
    report: IngestionReport | None = Field(
        description="The ingestion report, or null before conversion has read the ZIP."
    )


# Users and clinics


class UserBody(ResponseModel):
    id: UUID_TEXT
    email: str = Field(description="The user's e-mail address.")
    name: str | None = Field(description="The user's display name.")
    last_sign_in_at: datetime | None = Field(description="The user's last sign-in.")


class Member(UserBody):
    membership_id: str = Field(description="Id of the membership.")
    role: Literal["admin", "doctor"] = Field(description="Role in the clinic.")
    status: Literal["active", "removed"] = Field(description="Whether the member still has access.")
    joined_at: datetime = Field(description="When the membership was created.")


class MemberList(RootModel[list[Member]]):
    """Members of the caller's clinic."""


class ClinicRef(ResponseModel):
    id: UUID_TEXT
    name: str = Field(description="The clinic's name.")


class ApiKeyRef(ResponseModel):
    id: str = Field(description="The key's public id (the part after `vzm_`).")
    name: str = Field(description="The name the admin gave the key.")


class MembershipRef(ResponseModel):
    clinic_id: str = Field(description="The clinic's id.")
    clinic_name: str = Field(description="The clinic's name.")
    role: Literal["admin", "doctor"] = Field(description="Role in that clinic.")


class Me(ResponseModel):
    type: Literal["api_key", "user"] = Field(description="What authenticated the request.")
    current_clinic: ClinicRef = Field(description="The clinic the request acts in.")
    role: Literal["admin", "doctor"] = Field(description="The caller's role in it.")
    rights: list[str] = Field(description="What the caller may do, such as `studies:write`.")
    api_key: ApiKeyRef | None = Field(default=None, description="The API key, for a key.")
    user: UserBody | None = Field(default=None, description="The user, for an access token.")
    memberships: list[MembershipRef] | None = Field(
        default=None, description="The user's active memberships, for an access token."
    )


class Seats(ResponseModel):
    limit: int = Field(description="Seats the clinic bought.")
    used: int = Field(description="Active members plus pending invitations.")
    members: int = Field(description="Active members.")
    pending_invitations: int = Field(description="Pending, unexpired invitations.")


class ClinicBody(ResponseModel):
    id: UUID_TEXT
    name: str = Field(description="The clinic's name.")
    seats: Seats = Field(description="Seat usage.")
    role: Literal["admin", "doctor"] | None = Field(
        default=None, description="The user's role there (absent for an API key)."
    )


class ClinicList(RootModel[list[ClinicBody]]):
    """The caller's clinics."""


class InviteRequest(RequestModel):
    email: str = Field(max_length=320, description="E-mail address to invite.")
    role: str = Field(max_length=20, description="`doctor` or `admin`.")
    language: str | None = Field(
        default=None,
        max_length=10,
        description="Language of the e-mail, `pt_BR` or `en`; the request's language if absent.",
    )


class Invitation(ResponseModel):
    id: UUID_TEXT
    email: str = Field(description="The invited address.")
    role: Literal["admin", "doctor"] = Field(description="The role offered.")
    status: Literal["pending", "accepted", "revoked", "expired"] = Field(
        description="The invitation's state."
    )
    clinic_id: str = Field(description="The clinic's id.")
    created_at: datetime = Field(description="When it was sent.")
    expires_at: datetime = Field(description="When the link stops working.")


class RemoveDoctorRequest(RequestModel):
    user_id: str = Field(max_length=64, description="Id of the user to remove from the clinic.")


# Audit trail


class AuditEventQuery(RequestModel):
    """Filters and paging of the audit events; `queries.parse_filters` checks the values."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    person: str | None = Field(
        default=None, description="Only events of this user or API key (UUID)."
    )
    action: str | None = Field(
        default=None, description="Only events of this action, for example `study.viewed`."
    )
    study: str | None = Field(default=None, description="Only events about this study (UUID).")
    from_: str | None = Field(
        default=None, alias="from", description="First day of the period (YYYY-MM-DD), inclusive."
    )
    to: str | None = Field(
        default=None, description="Last day of the period (YYYY-MM-DD), inclusive."
    )
    cursor: str | None = Field(
        default=None, description="The `next_cursor` of the previous page, to read the next one."
    )
    limit: str | None = Field(default=None, description="Events per page, 1 to 200 (default 50).")


class AuditActor(ResponseModel):
    type: str = Field(description="`user`, `api_key`, `system` or `anonymous`.")
    id: str | None = Field(description="The user's or API key's id, when there is one.")
    role: str | None = Field(description="The actor's role in the clinic when the event happened.")


class AuditTarget(ResponseModel):
    type: str | None = Field(description="What the action was about, for example `study`.")
    id: str | None = Field(description="Its id.")


class AuditEvent(ResponseModel):
    id: UUID_TEXT
    seq: int = Field(description="Position of the event in the clinic's chain, from 1.")
    occurred_at: datetime = Field(description="When it happened (UTC).")
    action: str = Field(description="Stable dotted action name, for example `study.viewed`.")
    outcome: Literal["success", "denied", "failed"] = Field(description="How the action ended.")
    actor: AuditActor = Field(description="Who acted.")
    target: AuditTarget = Field(description="What the action was about.")
    ip: str | None = Field(description="The caller's IP address.")
    user_agent: str | None = Field(description="The caller's user agent.")
    request_id: str | None = Field(description="The request id, also in the portal's logs.")
    details: dict[str, Any] = Field(
        description="Facts about the action; never patient data, tokens or URLs."
    )
    prev_hash: str = Field(description="Hash of the previous event of the chain (hex SHA-256).")
    hash: str = Field(description="Hash of this event and `prev_hash` (hex SHA-256).")


class AuditEventPage(ResponseModel):
    events: list[AuditEvent] = Field(description="The events of this page, newest first.")
    next_cursor: str | None = Field(description="Cursor of the next page, or null on the last.")
    links: dict[str, str | None] = Field(description="`next`: path of the next page, or null.")
