"""Warnings collected during a conversion and the JSON report written next to the outputs.

The report lists every series candidate with the reason it was chosen or skipped, the
warnings (members named by archive index only) and the output grid. It holds no patient
data, no DICOM UID and no ZIP member name.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .series import SeriesCandidate, StudyIndex

REPORT_VERSION = 1

#: Warning codes and their English text; `{member_index}` and other fields come from params.
WARNING_TEXTS: dict[str, str] = {
    "member_not_dicom": "Member {member_index} is not a DICOM file and was skipped.",
    "member_unreadable": "Member {member_index} could not be read as DICOM and was skipped.",
    "member_empty": "Member {member_index} is an empty file (0 bytes) and was skipped.",
    "member_truncated": (
        "Member {member_index} is truncated: the file ends before the data its header "
        "declares. It was skipped."
    ),
    "character_set_unknown": (
        "Member {member_index} declares an unknown character set; its images were read "
        "and its text was decoded as Latin-1."
    ),
    "character_set_mismatch": (
        "Member {member_index} has text that is invalid in its declared character set; its "
        "images were read and its text was decoded as Latin-1."
    ),
    "duplicate_instance": (
        "Member {member_index} repeats an image already read from member {first_index} "
        "and was skipped."
    ),
    "duplicate_slice_dropped": (
        "Member {member_index} is an identical copy of the slice at the same position and "
        "was dropped."
    ),
    "pixel_sign_mismatch": (
        "The JPEG 2000 stream of member {member_index} is signed where Pixel Representation "
        "says unsigned, or the reverse; its values were read as Pixel Representation says."
    ),
    "member_pixel_data_size": (
        "Member {member_index} declares more pixel data than it holds and was skipped."
    ),
    "repeated_positions_first_volume": (
        "The chosen series holds different images at {position_count} slice positions "
        "(a 4D series); the first image at each position was used."
    ),
    "other_studies": (
        "The ZIP holds {study_count} studies of the same patient; only the study of the "
        "chosen series was used."
    ),
    "native_too_large": (
        "The volume at its own resolution takes {native_bytes} bytes, more than the viewer "
        "limit of {limit_bytes} bytes, so the viewer shows the model grid."
    ),
    "slices_resampled": (
        "The slices were resampled onto a regular grid along the slice normal "
        "(tilt {tilt_deg:.1f} degrees, steps from {min_step_mm:.3f} to {max_step_mm:.3f} mm)."
    ),
}


@dataclass(frozen=True)
class PipelineWarning:
    """A problem that did not stop the conversion, with a stable code."""

    code: str
    member_index: int | None = None
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def message(self) -> str:
        """Return the English text with the params filled in."""
        template = WARNING_TEXTS.get(self.code, self.code)
        return template.format(member_index=self.member_index, **self.params)

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form used in the report."""
        return {
            "code": self.code,
            "member_index": self.member_index,
            "params": dict(self.params),
            "message": self.message,
        }


def build_report(
    index: StudyIndex,
    *,
    chosen: SeriesCandidate | None,
    warnings: Sequence[PipelineWarning],
    output: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Assemble the report dictionary for a study (before or after conversion)."""
    report: dict[str, Any] = {
        "version": REPORT_VERSION,
        "member_count": index.member_count,
        "dicom_file_count": index.dicom_file_count,
        "skipped_members": [
            {"member_index": skipped.member_index, "reason": skipped.reason}
            for skipped in index.skipped_members
        ],
        "series": [candidate.to_report() for candidate in index.candidates],
        "chosen_series_id": chosen.series_id if chosen else None,
        "chosen_reason": (
            {"code": chosen.reason_code, "message": chosen.reason_text} if chosen else None
        ),
        "warnings": [warning.to_dict() for warning in warnings],
    }
    if output is not None:
        report["output"] = output
    return report


def write_report(report: dict[str, Any], path: Path) -> Path:
    """Write `report` as indented UTF-8 JSON to `path`."""
    path = Path(path)
    path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path
