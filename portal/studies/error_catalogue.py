"""Translated messages for the error codes a study can fail with.

Each code maps to what went wrong and what the user can do; placeholders are filled
from the attempt's `error_detail` after translation, so a study that failed while the
portal spoke English reads in Portuguese on a Portuguese page.
"""

from __future__ import annotations

from flask_babel import lazy_gettext as _l

GENERIC_CODE = "internal_error"

STUDY_ERROR_MESSAGES = {
    "archive_invalid": _l(
        "The file is not a valid ZIP archive or is damaged. Export the study again from the "
        "PACS or CD and upload the new ZIP."
    ),
    "archive_unsafe": _l(
        "The ZIP contains entries that are not allowed (links, paths outside the archive, "
        "encrypted or nested archives). Create a plain ZIP of the DICOM folder and upload it."
    ),
    "archive_too_large": _l(
        "The ZIP expands beyond the allowed limits (number of files, size or compression "
        "ratio). Upload one study per ZIP."
    ),
    "no_dicom_found": _l(
        "No DICOM image was found in the ZIP. Check that the archive contains the study's "
        "DICOM files and not only reports or viewer software."
    ),
    "no_usable_series": _l(
        "The ZIP has DICOM files but no series that can be used as a CT or MR volume "
        "(only localizers, screenshots or reports). Export the axial series of the study."
    ),
    "series_not_found": _l(
        "The requested series is not in this study. Choose one of the series listed in the "
        "study report."
    ),
    "slice_gap": _l(
        "The chosen series has missing slices, so it cannot be used as one volume. Export the "
        "complete series again."
    ),
    "series_not_usable": _l(
        "The requested series cannot be converted into a volume. Choose another series of "
        "the study report."
    ),
    "inconsistent_geometry": _l(
        "The slices of the chosen series do not form one volume (they differ in orientation, "
        "size or acquisition). Export a single acquisition of the series."
    ),
    "multiple_patients": _l(
        "The ZIP holds images of more than one patient. Upload one ZIP per patient."
    ),
    "unsupported_modality": _l(
        "The study's images are of a modality the portal does not process. Upload a CT or MR study."
    ),
    "pixel_decode_failed": _l(
        "The images of the chosen series could not be decoded. Export the study again, "
        "preferably without compression."
    ),
    "unsupported_transfer_syntax": _l(
        "The images of the chosen series are stored in the transfer syntax "
        "%(transfer_syntax)s, which the portal cannot decode. Export the study "
        "uncompressed (Explicit VR Little Endian), as JPEG Lossless or as JPEG 2000, and "
        "upload it again."
    ),
    "modality_not_supported": _l(
        "The segmentation service does not support this modality. Upload a CT study."
    ),
    "inference_unavailable": _l(
        "The segmentation service is unavailable. Run the study again in a few minutes."
    ),
    "inference_rejected": _l(
        "The segmentation service rejected the study. Contact support if this happens again."
    ),
    "inference_failed": _l(
        "The segmentation service could not process this study. Contact support if this "
        "happens again."
    ),
    "inference_timeout": _l(
        "The segmentation took longer than allowed. Run the study again later."
    ),
    "inference_bad_response": _l(
        "The segmentation service returned an invalid result. Run the study again; contact "
        "support if this happens again."
    ),
    "conversion_limit_exceeded": _l(
        "Converting the study needed more memory or time than allowed. Upload a ZIP with "
        "only the series to segment; contact support if this happens again."
    ),
    "processing_interrupted": _l(
        "Processing of the study was interrupted several times. Run it again; contact "
        "support if this happens again."
    ),
    "processing_timed_out": _l(
        "A processing step took longer than allowed. Run the study again later."
    ),
    "storage_unavailable": _l(
        "The portal could not reach its file storage. Run the study again in a few minutes."
    ),
    GENERIC_CODE: _l(
        "Something went wrong while processing the study. Run it again; contact support if "
        "this happens again."
    ),
}


def study_error_message(code: str | None, detail: dict | None = None) -> str:
    """Return the translated message for `code`, with placeholders from `detail`."""
    message = STUDY_ERROR_MESSAGES.get(code or GENERIC_CODE, STUDY_ERROR_MESSAGES[GENERIC_CODE])
    text = str(message)
    if detail:
        try:
            return text % detail
        except (KeyError, TypeError, ValueError):
            return text
    return text
