"""Series discovery, grouping and choice from DICOM headers (pixels are not read here).

Files are grouped by (0020,000E) Series Instance UID and split further when one series
mixes orientations, matrix sizes or pixel spacings, because each group must form one
volume. Every group becomes a `SeriesCandidate` with a stable `series_id`, the first 12 hex
digits of the SHA-256 of the UID and the split key. The same ZIP always gives the same ids,
and an id does not reveal the UID.

Choice rule (`choose_series`): among usable CT and MR volumes, take the one with the most
distinct slice positions; break ties by the smallest median slice step, then by the
smallest series_id. The caller may force a series_id instead.
"""

from __future__ import annotations

import hashlib
import logging
import struct
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from .archive import ArchiveContents, ExtractedMember, SkippedMember
from .errors import (
    NoDicomFound,
    NoUsableSeries,
    SeriesNotFound,
    SeriesNotUsable,
    SliceGap,
    UnsupportedModality,
)
from .geometry import (
    StackGeometry,
    distinct_positions,
    orientation_label,
    plane_geometry,
    stack_geometry,
)
from .report import PipelineWarning

logger = logging.getLogger(__name__)

SUPPORTED_MODALITIES = ("CT", "MR")

_UNDEFINED_LENGTH = 0xFFFFFFFF
_SECONDARY_CAPTURE_PREFIX = "1.2.840.10008.5.1.4.1.1.7"
_DOSE_REPORT_SOP_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.88.67",  # X-Ray Radiation Dose SR
        "1.2.840.10008.5.1.4.1.1.88.68",  # Radiopharmaceutical Radiation Dose SR
        "1.2.840.10008.5.1.4.1.1.88.76",  # Enhanced X-Ray Radiation Dose SR
    }
)
_DOSE_IMAGE_TYPES = frozenset({"DOSE_INFO", "DOSE_REPORT", "DOSE"})
_NON_IMAGE_MODALITIES = frozenset(
    {"SR", "PR", "KO", "DOC", "RTSTRUCT", "RTPLAN", "RTRECORD", "SEG", "REG", "FID", "PLAN"}
)

#: Stable reason codes for each candidate and their English text.
REASON_TEXTS: dict[str, str] = {
    "chosen_most_slices": (
        "Chosen: the usable CT or MR volume with the most slices (ties go to the smaller "
        "slice step)."
    ),
    "chosen_forced": "Chosen by the caller.",
    "not_chosen": "Usable, but another series has more slices or a smaller slice step.",
    "usable": "Usable CT or MR volume.",
    "non_image": "Not an image: the objects hold no pixel data (report, structure set, "
    "presentation state, directory or document).",
    "dose_report": "Dose report, not a diagnostic image.",
    "secondary_capture": "Secondary capture (screenshot or summary page), not a volume.",
    "localizer": "Localizer (scout) image, not a volume.",
    "single_slice": "A single image cannot form a volume.",
    "unsupported_modality": "Modality other than CT or MR.",
    "not_grayscale": "Colour images cannot be converted to a CT or MR volume.",
    "missing_geometry": "Image position, orientation or pixel spacing is missing.",
    "slice_gap": "The slice positions leave a gap of more than twice the median step.",
}


@dataclass(frozen=True)
class SliceHeader:
    """Header values of one image (one file, or one frame of a multi-frame file)."""

    member_index: int
    path: Path
    frame_index: int | None
    instance_key: str  # SOP Instance UID and frame; kept in memory only, never reported
    rows: int
    columns: int
    position_lps: tuple[float, float, float] | None
    orientation: tuple[float, ...] | None
    pixel_spacing_mm: tuple[float, float] | None
    rescale_slope: float
    rescale_intercept: float
    instance_number: int | None


@dataclass
class SeriesCandidate:
    """One group of images that may form a volume, with the verdict on it."""

    series_id: str
    series_number: int | None
    modality: str
    series_description: str
    slices: tuple[SliceHeader, ...]
    reason_code: str
    slice_count: int = 0
    orientation: str | None = None
    stack: StackGeometry | None = None
    chosen: bool = False

    @property
    def is_usable(self) -> bool:
        """Whether the group forms a CT or MR volume."""
        return self.reason_code in ("usable", "not_chosen", "chosen_most_slices", "chosen_forced")

    @property
    def reason_text(self) -> str:
        """Return the English text of `reason_code`."""
        return REASON_TEXTS[self.reason_code]

    @property
    def member_indices(self) -> tuple[int, ...]:
        """Return the sorted archive indices of the members in this group."""
        return tuple(sorted({header.member_index for header in self.slices}))

    def to_report(self) -> dict[str, Any]:
        """Return the JSON form used in the report (no UID, no member name)."""
        first = self.slices[0] if self.slices else None
        spacing = first.pixel_spacing_mm if first else None
        return {
            "series_id": self.series_id,
            "series_number": self.series_number,
            "modality": self.modality,
            "description": self.series_description,
            "image_count": len(self.slices),
            "slice_count": self.slice_count,
            "rows": first.rows if first else None,
            "columns": first.columns if first else None,
            "pixel_spacing_mm": list(spacing) if spacing else None,
            "slice_step_mm": (
                round(self.stack.median_step_mm, 4) if self.stack and self.slice_count > 1 else None
            ),
            "orientation": self.orientation,
            "tilt_deg": round(self.stack.tilt_deg, 2) if self.stack else None,
            "member_indices": list(self.member_indices),
            "chosen": self.chosen,
            "reason_code": self.reason_code,
            "reason": self.reason_text,
        }


@dataclass
class StudyIndex:
    """Every series candidate of a study, with the warnings raised while reading headers."""

    member_count: int
    dicom_file_count: int
    candidates: list[SeriesCandidate]
    warnings: list[PipelineWarning] = field(default_factory=list)
    skipped_members: list[SkippedMember] = field(default_factory=list)


@dataclass
class _ParsedFile:
    member: ExtractedMember
    series_uid: str
    series_number: int | None
    modality: str
    series_description: str
    sop_class_uid: str
    image_type: tuple[str, ...]
    has_pixel_data: bool
    samples_per_pixel: int
    slices: list[SliceHeader]


def discover_series(contents: ArchiveContents) -> StudyIndex:
    """Read the header of every extracted member and group the images into candidates.

    Members that are not DICOM are skipped with a warning naming their archive index.

    Raises
    ------
    NoDicomFound
        No member is a readable DICOM file.
    """
    warnings: list[PipelineWarning] = []
    parsed: list[_ParsedFile] = []
    for member in contents.members:
        result = _parse_member(member)
        if isinstance(result, PipelineWarning):
            warnings.append(result)
        else:
            parsed.append(result)

    if not parsed:
        raise NoDicomFound(member_count=contents.member_count)

    candidates = _group_candidates(parsed, warnings)
    logger.info("Discovered %d series candidates in %d DICOM files", len(candidates), len(parsed))
    return StudyIndex(
        member_count=contents.member_count,
        dicom_file_count=len(parsed),
        candidates=candidates,
        warnings=warnings,
        skipped_members=list(contents.skipped),
    )


def choose_series(index: StudyIndex, series_id: str | None = None) -> SeriesCandidate:
    """Mark and return the series to convert, by the rule in the module docstring.

    Raises
    ------
    SeriesNotFound
        `series_id` is given and no candidate has it.
    SeriesNotUsable
        `series_id` names a candidate that is skipped (a localizer, for instance).
    SliceGap, UnsupportedModality
        The forced series, or when nothing is usable the largest image series, was skipped
        for that reason.
    NoUsableSeries
        Nothing is usable for any other reason.
    """
    for candidate in index.candidates:
        candidate.chosen = False
        if candidate.is_usable:
            candidate.reason_code = "usable"

    usable = [candidate for candidate in index.candidates if candidate.is_usable]

    if series_id is not None:
        matches = [candidate for candidate in index.candidates if candidate.series_id == series_id]
        if not matches:
            raise SeriesNotFound(series_id=series_id)
        chosen = matches[0]
        if not chosen.is_usable:
            _raise_for_skipped(chosen)
        chosen_code = "chosen_forced"
    else:
        if not usable:
            _raise_for_no_usable_series(index.candidates)
        chosen = min(
            usable,
            key=lambda c: (-c.slice_count, c.stack.median_step_mm, c.series_id),
        )
        chosen_code = "chosen_most_slices"

    for candidate in usable:
        candidate.reason_code = "not_chosen"
    chosen.reason_code = chosen_code
    chosen.chosen = True
    logger.info("Chose series %s (%s)", chosen.series_id, chosen_code)
    return chosen


def _raise_for_skipped(candidate: SeriesCandidate) -> None:
    """Raise the error for a series the caller forced although it is skipped."""
    if candidate.reason_code == "slice_gap":
        raise SliceGap(gap_mm=candidate.stack.max_step_mm, step_mm=candidate.stack.median_step_mm)
    if candidate.reason_code == "unsupported_modality":
        raise UnsupportedModality(modality=candidate.modality or "unknown")
    raise SeriesNotUsable(series_id=candidate.series_id, reason_code=candidate.reason_code)


def _raise_for_no_usable_series(candidates: Sequence[SeriesCandidate]) -> None:
    images = [c for c in candidates if c.reason_code not in ("non_image", "dose_report")]
    if images:
        largest = max(images, key=lambda c: (c.slice_count, len(c.slices)))
        if largest.reason_code == "slice_gap":
            raise SliceGap(gap_mm=largest.stack.max_step_mm, step_mm=largest.stack.median_step_mm)
        modalities = {c.modality for c in images}
        if all(c.reason_code == "unsupported_modality" for c in images):
            raise UnsupportedModality(modality=", ".join(sorted(modalities)) or "unknown")
    raise NoUsableSeries(series_count=len(candidates))


def _parse_member(member: ExtractedMember) -> _ParsedFile | PipelineWarning:
    # Only the exception's type is logged: pydicom's messages can quote header values.
    try:
        dataset, has_pixel_data = _read_header(member.path)
    except InvalidDicomError:
        return PipelineWarning("member_not_dicom", member.member_index)
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types on damaged files
        logger.warning("Member %d could not be parsed: %s", member.member_index, type(exc).__name__)
        return PipelineWarning("member_unreadable", member.member_index)

    try:
        return _parsed_file(member, dataset, has_pixel_data)
    except Exception as exc:  # noqa: BLE001 - a damaged element surfaces only when read
        logger.warning(
            "Member %d has invalid header values: %s", member.member_index, type(exc).__name__
        )
        return PipelineWarning("member_unreadable", member.member_index)


def _read_header(path: Path) -> tuple[Dataset, bool]:
    """Parse the header up to the pixel data and tell whether pixel data follows.

    With `stop_before_pixels`, pydicom leaves the file positioned at the pixel data element
    when there is one, so a position short of the end of the file means pixel data follows.
    """
    size = path.stat().st_size
    with open(path, "rb") as handle:
        try:
            dataset = pydicom.dcmread(handle, stop_before_pixels=True)
        except InvalidDicomError:
            # No 128-byte preamble and "DICM" prefix: try a bare data set.
            handle.seek(0)
            dataset = pydicom.dcmread(handle, stop_before_pixels=True, force=True)
        has_pixel_data = handle.tell() < size
        if has_pixel_data:
            _check_pixel_data_length(handle, size)
    if not _looks_like_dicom(dataset):
        raise InvalidDicomError("no SOP Class, SOP Instance, Modality or Series UID")
    return dataset, has_pixel_data


def _check_pixel_data_length(handle: BinaryIO, size: int) -> None:
    """Raise ValueError when the pixel data element claims more bytes than the file holds.

    `handle` is positioned at the element's tag. Encapsulated (undefined length) data is
    not checked here; a damaged fragment fails when the series is decoded.
    """
    start = handle.tell()
    header = handle.read(12)
    if len(header) < 8:
        raise ValueError("pixel data element is truncated")
    byte_order = ">" if header[:2] == b"\x7f\xe0" else "<"
    if header[4:6] in (b"OB", b"OW", b"OF", b"OD", b"OL", b"OV") and header[6:8] == b"\0\0":
        if len(header) < 12:
            raise ValueError("pixel data element is truncated")
        (length,) = struct.unpack(byte_order + "I", header[8:12])
        value_start = start + 12
    else:
        (length,) = struct.unpack(byte_order + "I", header[4:8])
        value_start = start + 8
    if length != _UNDEFINED_LENGTH and value_start + length > size:
        raise ValueError("pixel data is shorter than its declared length")


def _looks_like_dicom(dataset: Dataset) -> bool:
    if not len(dataset):
        return False
    keys = ("SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID", "Modality")
    return any(key in dataset for key in keys) or "MediaStorageSOPClassUID" in getattr(
        dataset, "file_meta", {}
    )


def _parsed_file(member: ExtractedMember, dataset: Dataset, has_pixel_data: bool) -> _ParsedFile:
    file_meta = getattr(dataset, "file_meta", None)
    sop_class_uid = str(
        dataset.get("SOPClassUID", "")
        or (file_meta.get("MediaStorageSOPClassUID", "") if file_meta else "")
    )
    sop_instance_uid = str(dataset.get("SOPInstanceUID", "")) or f"member-{member.member_index}"
    image_type = tuple(str(value).upper() for value in _as_list(dataset.get("ImageType")))
    parsed = _ParsedFile(
        member=member,
        series_uid=str(dataset.get("SeriesInstanceUID", "")),
        series_number=_to_int(dataset.get("SeriesNumber")),
        modality=str(dataset.get("Modality", "") or "").upper(),
        series_description=str(dataset.get("SeriesDescription", "") or ""),
        sop_class_uid=sop_class_uid,
        image_type=image_type,
        has_pixel_data=has_pixel_data,
        samples_per_pixel=_to_int(dataset.get("SamplesPerPixel")) or 1,
        slices=[],
    )
    if has_pixel_data:
        parsed.slices = _slice_headers(member, dataset, sop_instance_uid)
    return parsed


def _slice_headers(
    member: ExtractedMember, dataset: Dataset, sop_instance_uid: str
) -> list[SliceHeader]:
    rows = _to_int(dataset.get("Rows")) or 0
    columns = _to_int(dataset.get("Columns")) or 0
    frame_count = _to_int(dataset.get("NumberOfFrames")) or 1
    base = SliceHeader(
        member_index=member.member_index,
        path=member.path,
        frame_index=None,
        instance_key=sop_instance_uid,
        rows=rows,
        columns=columns,
        position_lps=_to_floats(dataset.get("ImagePositionPatient"), 3),
        orientation=_to_floats(dataset.get("ImageOrientationPatient"), 6),
        pixel_spacing_mm=_to_floats(dataset.get("PixelSpacing"), 2),
        rescale_slope=_to_float(dataset.get("RescaleSlope"), 1.0),
        rescale_intercept=_to_float(dataset.get("RescaleIntercept"), 0.0),
        instance_number=_to_int(dataset.get("InstanceNumber")),
    )
    if frame_count == 1 and "PerFrameFunctionalGroupsSequence" not in dataset:
        return [base]

    # Enhanced multi-frame objects keep geometry and rescale in functional groups, per frame
    # or shared by all frames.
    shared_groups = dataset.get("SharedFunctionalGroupsSequence")
    shared = shared_groups[0] if shared_groups else Dataset()
    per_frame_groups = dataset.get("PerFrameFunctionalGroupsSequence") or []
    headers = []
    for frame_index in range(frame_count):
        frame = per_frame_groups[frame_index] if frame_index < len(per_frame_groups) else Dataset()

        def functional(sequence: str, keyword: str, frame: Dataset = frame) -> Any:
            for group in (frame, shared):
                items = group.get(sequence)
                if items and keyword in items[0]:
                    return items[0].get(keyword)
            return None

        headers.append(
            replace(
                base,
                frame_index=frame_index,
                instance_key=f"{sop_instance_uid}#{frame_index}",
                position_lps=_to_floats(
                    functional("PlanePositionSequence", "ImagePositionPatient"), 3
                ),
                orientation=_to_floats(
                    functional("PlaneOrientationSequence", "ImageOrientationPatient"), 6
                )
                or base.orientation,
                pixel_spacing_mm=_to_floats(functional("PixelMeasuresSequence", "PixelSpacing"), 2)
                or base.pixel_spacing_mm,
                rescale_slope=_to_float(
                    functional("PixelValueTransformationSequence", "RescaleSlope"),
                    base.rescale_slope,
                ),
                rescale_intercept=_to_float(
                    functional("PixelValueTransformationSequence", "RescaleIntercept"),
                    base.rescale_intercept,
                ),
            )
        )
    return headers


def _group_candidates(
    parsed: list[_ParsedFile], warnings: list[PipelineWarning]
) -> list[SeriesCandidate]:
    groups: dict[tuple[str, str], list[_ParsedFile]] = defaultdict(list)
    for item in parsed:
        groups[(item.series_uid, _split_key(item))].append(item)

    candidates = []
    for (series_uid, split_key), files in groups.items():
        files.sort(key=lambda f: f.member.member_index)
        slices = _unique_slices(files, warnings)
        first = files[0]
        candidate = SeriesCandidate(
            series_id=_series_id(series_uid, split_key),
            series_number=first.series_number,
            modality=first.modality,
            series_description=first.series_description,
            slices=tuple(slices),
            reason_code="usable",
        )
        _assess(candidate, files)
        candidates.append(candidate)

    candidates.sort(key=lambda c: (c.series_number is None, c.series_number or 0, c.series_id))
    return candidates


def _split_key(item: _ParsedFile) -> str:
    if not item.has_pixel_data or not item.slices:
        return "non_image"
    first = item.slices[0]
    orientation = (
        ",".join(f"{value:.3f}" for value in first.orientation) if first.orientation else "none"
    )
    spacing = (
        ",".join(f"{value:.4f}" for value in first.pixel_spacing_mm)
        if first.pixel_spacing_mm
        else "none"
    )
    return f"{first.rows}x{first.columns}|{orientation}|{spacing}"


def _series_id(series_uid: str, split_key: str) -> str:
    digest = hashlib.sha256(f"{series_uid}|{split_key}".encode()).hexdigest()
    return digest[:12]


def _unique_slices(files: list[_ParsedFile], warnings: list[PipelineWarning]) -> list[SliceHeader]:
    seen: dict[str, int] = {}
    slices = []
    for item in files:
        for header in item.slices:
            first_index = seen.get(header.instance_key)
            if first_index is not None:
                if header.frame_index in (None, 0):
                    warnings.append(
                        PipelineWarning(
                            "duplicate_instance",
                            header.member_index,
                            {"first_index": first_index},
                        )
                    )
                continue
            seen[header.instance_key] = header.member_index
            slices.append(header)
    return slices


def _assess(candidate: SeriesCandidate, files: list[_ParsedFile]) -> None:
    """Set the candidate's reason code, slice count and geometry from its headers."""
    sop_classes = {f.sop_class_uid for f in files}
    image_types = {value for f in files for value in f.image_type}

    candidate.slice_count = len(candidate.slices)
    if not candidate.slices or candidate.modality in _NON_IMAGE_MODALITIES:
        candidate.reason_code = "non_image"
        return
    if sop_classes & _DOSE_REPORT_SOP_CLASSES or image_types & _DOSE_IMAGE_TYPES:
        candidate.reason_code = "dose_report"
        return

    has_geometry = all(
        s.position_lps and s.orientation and s.pixel_spacing_mm for s in candidate.slices
    )
    is_secondary_capture = any(uid.startswith(_SECONDARY_CAPTURE_PREFIX) for uid in sop_classes)
    derived_secondary = any(f.image_type[:2] == ("DERIVED", "SECONDARY") for f in files)
    if is_secondary_capture or (derived_secondary and not has_geometry):
        candidate.reason_code = "secondary_capture"
        return
    if "LOCALIZER" in image_types:
        candidate.reason_code = "localizer"
        return
    if candidate.modality not in SUPPORTED_MODALITIES:
        candidate.reason_code = "unsupported_modality"
        return
    if any(f.samples_per_pixel != 1 for f in files):
        candidate.reason_code = "not_grayscale"
        return
    if not has_geometry:
        candidate.reason_code = "missing_geometry"
        return

    plane = plane_geometry(candidate.slices[0].orientation, candidate.slices[0].pixel_spacing_mm)
    candidate.orientation = orientation_label(plane.normal)
    positions = distinct_positions([s.position_lps for s in candidate.slices], plane.normal)
    candidate.slice_count = len(positions)
    if len(positions) < 2:
        candidate.reason_code = "single_slice"
        return
    candidate.stack = stack_geometry(plane, positions)
    if candidate.stack.has_gap:
        candidate.reason_code = "slice_gap"


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, str | bytes):
        return [value]
    try:
        return list(value)
    except TypeError:
        return [value]


def _to_int(value: Any) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _to_float(value: Any, default: float) -> float:
    try:
        return float(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        return default


def _to_floats(value: Any, count: int) -> tuple[float, ...] | None:
    values = _as_list(value)
    if len(values) != count:
        return None
    try:
        result = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        return None
    return result if all(np.isfinite(result)) else None
