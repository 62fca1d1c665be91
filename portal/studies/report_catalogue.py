"""Translated texts for the ingestion report that the pipeline stores on each attempt.

The pipeline writes stable codes (a reason per series, a code per warning) with English
texts. Pages show these translations instead, with placeholders filled from the warning's
params after translation. Files are named by their index in the archive, never by path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask_babel import lazy_gettext as _l

#: Why each series was chosen or skipped, by the pipeline's reason code.
REASON_MESSAGES = {
    "chosen_most_slices": _l(
        "Chosen: the CT or MR volume with the most slices (ties go to the smaller slice step)."
    ),
    "chosen_forced": _l("Chosen by a user."),
    "not_chosen": _l("Usable, but another series has more slices or a smaller slice step."),
    "usable": _l("Usable CT or MR volume."),
    "non_image": _l(
        "Not an image (report, structure set, presentation state, directory or document)."
    ),
    "dose_report": _l("Dose report, not a diagnostic image."),
    "secondary_capture": _l("Secondary capture (screenshot or summary page), not a volume."),
    "localizer": _l("Localizer (scout) image, not a volume."),
    "single_slice": _l("A single image cannot form a volume."),
    "unsupported_modality": _l("Modality other than CT or MR."),
    "not_grayscale": _l("Colour images cannot be used as a CT or MR volume."),
    "missing_geometry": _l("Image position, orientation or pixel spacing is missing."),
    "slice_gap": _l("Slices are missing: a gap is larger than twice the usual slice step."),
    "unsupported_transfer_syntax": _l(
        "Stored in a compression (transfer syntax) the portal cannot decode."
    ),
    "mosaic": _l(
        "Siemens MOSAIC image with several slices tiled in one image. Export the series "
        "without MOSAIC to use it."
    ),
    "other_4d_volume": _l(
        "Another volume (echo, phase or time point) of a 4D series; the first volume is used."
    ),
    "other_study": _l("Belongs to another study of the same patient."),
}

#: Warnings raised while reading the study, by the pipeline's warning code.
WARNING_MESSAGES = {
    "member_not_dicom": _l("File %(member_index)s of the ZIP is not a DICOM file; skipped."),
    "member_unreadable": _l(
        "File %(member_index)s of the ZIP could not be read as DICOM; skipped."
    ),
    "member_empty": _l("File %(member_index)s of the ZIP is empty (0 bytes); skipped."),
    "member_truncated": _l(
        "File %(member_index)s of the ZIP is incomplete (it ends before its image data); "
        "skipped. Export the study again if this file belongs to the chosen series."
    ),
    "character_set_unknown": _l(
        "File %(member_index)s of the ZIP declares an unknown character set. Its images were "
        "used; names and descriptions in it may show wrong accented letters."
    ),
    "character_set_mismatch": _l(
        "File %(member_index)s of the ZIP has text that does not match its declared "
        "character set. Its images were used; names and descriptions in it may show wrong "
        "accented letters."
    ),
    "pixel_sign_mismatch": _l(
        "The compressed image of file %(member_index)s of the ZIP disagrees with its header "
        "on signed values; it was read as the header (Pixel Representation) declares."
    ),
    "member_pixel_data_size": _l(
        "File %(member_index)s of the ZIP declares more image data than it holds; skipped."
    ),
    "duplicate_instance": _l(
        "File %(member_index)s of the ZIP repeats an image of file %(first_index)s; skipped."
    ),
    "duplicate_slice_dropped": _l(
        "File %(member_index)s of the ZIP is a copy of another slice at the same position; skipped."
    ),
    "repeated_positions_first_volume": _l(
        "The series has different images at %(position_count)s slice positions (a 4D "
        "series); the first image at each position was used."
    ),
    "other_studies": _l(
        "The ZIP holds %(study_count)s studies of the same patient; only the study of the "
        "chosen series was used."
    ),
    "native_too_large": _l(
        "The series is too large to show at its own resolution; the viewer shows the "
        "resampled volume."
    ),
    "slices_resampled": _l(
        "The slices were resampled onto a regular grid (gantry tilt %(tilt_deg).1f°, "
        "slice steps from %(min_step_mm).2f to %(max_step_mm).2f mm)."
    ),
}

#: Plane names of the `orientation` field.
ORIENTATION_NAMES = {
    "axial": _l("axial"),
    "coronal": _l("coronal"),
    "sagittal": _l("sagittal"),
    "oblique": _l("oblique"),
}

UNKNOWN_REASON = _l("No explanation is available for this series.")
UNKNOWN_WARNING = _l("The conversion reported a problem that has no description yet.")

#: Reason codes of series a user may pick for a new attempt.
PICKABLE_REASONS = frozenset(
    {
        "chosen_most_slices",
        "chosen_forced",
        "not_chosen",
        "usable",
        "other_4d_volume",
        "other_study",
    }
)


@dataclass(frozen=True)
class SeriesRow:
    """One series of the report, ready to display."""

    series_id: str
    series_number: int | None
    description: str
    modality: str
    slices: int
    spacing_mm: str
    orientation: str
    chosen: bool
    reason: str
    is_pickable: bool


@dataclass(frozen=True)
class ReportView:
    """The translated ingestion report of one attempt."""

    series: list[SeriesRow]
    warnings: list[str]
    chosen_series_id: str | None
    window: dict[str, Any] | None


def reason_message(code: str | None) -> str:
    """Return the translated reason for a series' reason code."""
    return str(REASON_MESSAGES.get(code or "", UNKNOWN_REASON))


def warning_message(warning: dict[str, Any]) -> str:
    """Return the translated warning with its placeholders filled from the stored params."""
    message = WARNING_MESSAGES.get(str(warning.get("code")))
    if message is None:
        return str(UNKNOWN_WARNING)
    values = dict(warning.get("params") or {})
    values["member_index"] = warning.get("member_index")
    text = str(message)
    try:
        return text % values
    except (KeyError, TypeError, ValueError):
        return text


def describe_report(report: dict[str, Any] | None) -> ReportView | None:
    """Build the translated view of an attempt's report; None when there is no report."""
    if not report:
        return None
    rows = []
    for series in report.get("series") or []:
        rows.append(
            SeriesRow(
                series_id=str(series.get("series_id", "")),
                series_number=series.get("series_number"),
                description=str(series.get("description") or ""),
                modality=str(series.get("modality") or ""),
                slices=int(series.get("slices", series.get("slice_count")) or 0),
                spacing_mm=_spacing_text(series),
                orientation=str(ORIENTATION_NAMES.get(series.get("orientation") or "", "")),
                chosen=bool(series.get("chosen")),
                reason=reason_message(series.get("reason_code")),
                is_pickable=series.get("reason_code") in PICKABLE_REASONS,
            )
        )
    output = report.get("output") or {}
    return ReportView(
        series=rows,
        warnings=[warning_message(warning) for warning in report.get("warnings") or []],
        chosen_series_id=report.get("chosen_series_id"),
        window=output.get("window"),
    )


def _spacing_text(series: dict[str, Any]) -> str:
    pixel = series.get("pixel_spacing_mm")
    step = series.get("slice_step_mm")
    if not pixel:
        return ""
    parts = [f"{float(value):.2f}" for value in pixel]
    if step:
        parts.append(f"{float(step):.2f}")
    return " × ".join(parts)
