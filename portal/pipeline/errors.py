"""Named pipeline errors, each with a stable code that the web side translates.

A `PipelineError` carries its `code` (snake_case, never changes once published) and a
`params` dict of the values its message template refers to. The English message is built
from `message_template`. A translated page rebuilds it from the code and the params, so
the params contain only plain numbers and short strings. They never contain a patient
identifier, a UID or a ZIP member name: members are named by their index in the archive.
"""

from __future__ import annotations

from typing import Any, ClassVar


class PipelineError(Exception):
    """Base class of every error the pipeline raises on purpose."""

    code: ClassVar[str] = "pipeline_error"
    message_template: ClassVar[str] = "The study could not be converted."

    def __init__(self, **params: Any) -> None:
        self.params = params
        super().__init__(self.message)

    @property
    def message(self) -> str:
        """Return the English message with the params filled in."""
        try:
            return self.message_template.format(**self.params)
        except (KeyError, IndexError, ValueError):
            return self.message_template


class ArchiveInvalid(PipelineError):
    """The upload is not a readable ZIP archive.

    `reason` is one of not_a_zip, unreadable, truncated, missing_local_header,
    encrypted_member, damaged_member, unsupported_compression; the member ones also carry
    `member_index`.
    """

    code = "archive_invalid"
    message_template = (
        "The upload is not a readable ZIP archive ({reason}). "
        "Create the ZIP again without a password and upload it again."
    )


class ArchiveUnsafe(PipelineError):
    """The ZIP contains an entry that could escape or overload the work folder."""

    code = "archive_unsafe"
    message_template = (
        "The ZIP was rejected because member {member_index} is unsafe ({reason}). "
        "Zip the DICOM files alone, without links, nested archives or unusual paths."
    )


class ArchiveTooLarge(PipelineError):
    """The ZIP exceeds a member count or size limit."""

    code = "archive_too_large"
    message_template = (
        "The ZIP exceeds the limit on {limit_name} ({value} > {limit}). Upload one study at a time."
    )


class NoDicomFound(PipelineError):
    """No member of the ZIP is a readable DICOM file."""

    code = "no_dicom_found"
    message_template = (
        "No DICOM file was found among the {member_count} files of the ZIP. "
        "Check that the ZIP contains the exported DICOM images."
    )


class NoUsableSeries(PipelineError):
    """DICOM files were found, but none forms a CT or MR volume."""

    code = "no_usable_series"
    message_template = (
        "None of the {series_count} series found is a CT or MR volume of several slices. "
        "Export the axial image series of the study."
    )


class SeriesNotFound(PipelineError):
    """The series the caller asked for is not in the study."""

    code = "series_not_found"
    message_template = (
        "The series {series_id} is not in this study. Inspect the study to list its series."
    )


class SeriesNotUsable(PipelineError):
    """The series the caller requested exists but cannot be converted.

    `reason_code` is the candidate's skip reason, one of the keys of
    `portal.pipeline.series.REASON_TEXTS` (localizer, secondary_capture, ...).
    """

    code = "series_not_usable"
    message_template = (
        "The series {series_id} cannot be converted ({reason_code}). Choose another series."
    )


class SliceGap(PipelineError):
    """The slices of the series leave a gap too large to interpolate."""

    code = "slice_gap"
    message_template = (
        "The series has a gap of {gap_mm:.2f} mm between slices, more than twice the usual "
        "step of {step_mm:.2f} mm. Export the series again with all of its slices."
    )


class InconsistentGeometry(PipelineError):
    """The slices of the series do not form one volume."""

    code = "inconsistent_geometry"
    message_template = (
        "The slices of the series do not form one volume ({reason}). "
        "Export a single acquisition of the series."
    )


class PixelDecodeFailed(PipelineError):
    """The pixel data of a slice of the chosen series could not be decoded."""

    code = "pixel_decode_failed"
    message_template = (
        "The image in member {member_index} could not be decoded ({transfer_syntax}). "
        "Export the study uncompressed or as JPEG Lossless / JPEG 2000."
    )


class UnsupportedTransferSyntax(PipelineError):
    """The series' pixel data is in a transfer syntax that no installed decoder reads."""

    code = "unsupported_transfer_syntax"
    message_template = (
        "The series is stored in the transfer syntax {transfer_syntax} ({transfer_syntax_uid}), "
        "which the portal cannot decode. Export the study uncompressed (Explicit VR Little "
        "Endian), as JPEG Lossless or as JPEG 2000."
    )


class MultiplePatients(PipelineError):
    """The images of the upload belong to more than one patient."""

    code = "multiple_patients"
    message_template = (
        "The ZIP holds images of {patient_count} different patients. Upload one ZIP per patient."
    )


class UnsupportedModality(PipelineError):
    """The study contains images, but of a modality other than CT and MR."""

    code = "unsupported_modality"
    message_template = "The image series are of modality {modality}; only CT and MR are supported."


#: Every error code the pipeline can raise, mapped to its English message template.
ERROR_CODES: dict[str, str] = {
    cls.code: cls.message_template
    for cls in (
        PipelineError,
        ArchiveInvalid,
        ArchiveUnsafe,
        ArchiveTooLarge,
        NoDicomFound,
        NoUsableSeries,
        SeriesNotFound,
        SeriesNotUsable,
        SliceGap,
        InconsistentGeometry,
        PixelDecodeFailed,
        UnsupportedTransferSyntax,
        MultiplePatients,
        UnsupportedModality,
    )
}
