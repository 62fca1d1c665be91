"""Series discovery, grouping and choice from DICOM headers (pixels are not read here).

Files are grouped by (0020,000E) Series Instance UID and split further when one series
mixes orientations, matrix sizes or pixel spacings, because each group must form one
volume. Every group becomes a `SeriesCandidate` with a stable `series_id`, the first 12 hex
digits of the SHA-256 of the UID and the split key. The same ZIP always gives the same ids,
and an id does not reveal the UID.

A group whose images repeat slice positions is a 4D series (echoes, phases, time points)
when one header value tells the volumes apart: the first of (0018,0086) Echo Numbers,
(0020,0100) Temporal Position Identifier, (0018,1060) Trigger Time, (0020,9241) Nominal
Percentage of Cardiac Phase, (0018,9087) Diffusion b-value, (0020,0012) Acquisition Number
and (0008,0032) Acquisition Time that splits the group into volumes of at least two slices
at distinct positions. Each volume becomes its own candidate; the first (lowest value) is
usable and the others are reported as `other_4d_volume`. Repeats that no header value
separates are resolved from the pixels when the volume is built.

Choice rule (`choose_series`): among usable CT and MR volumes, take the one with the most
distinct slice positions; break ties by the smallest median slice step, then by the
smallest series_id. The caller may force a series_id instead. Usable candidates of another
study of the same patient are then reported as `other_study`.
"""

from __future__ import annotations

import hashlib
import logging
import re
import struct
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, BinaryIO

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import get_decoder

from .archive import ArchiveContents, ArchiveMember, SkippedMember
from .charset import check_character_set
from .errors import (
    MultiplePatients,
    NoDicomFound,
    NoUsableSeries,
    SeriesNotFound,
    SeriesNotUsable,
    SliceGap,
    UnsupportedModality,
    UnsupportedTransferSyntax,
)
from .geometry import (
    POSITION_TOLERANCE_MM,
    StackGeometry,
    distinct_positions,
    orientation_label,
    plane_geometry,
    stack_geometry,
)
from .report import PipelineWarning
from .truncation import (
    EndTrackingStream,
    MemberTruncated,
    check_fragments_end,
    expects_pixel_data,
    has_part10_prefix,
    has_short_value,
)

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
#: Header values that tell apart the volumes of a 4D series, in the order they are tried.
_VOLUME_KEYWORDS = (
    "EchoNumbers",
    "TemporalPositionIdentifier",
    "TriggerTime",
    "NominalPercentageOfCardiacPhase",
    "DiffusionBValue",
    "AcquisitionNumber",
    "AcquisitionTime",
)
#: Native (uncompressed) little endian transfer syntaxes whose pixel data is read directly.
NATIVE_LITTLE_ENDIAN = frozenset({"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"})
_MULTI_VALUE_SEPARATOR = re.compile(r"[\\,;\s]+")

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
    "unsupported_transfer_syntax": (
        "The pixel data is stored in a transfer syntax that the installed decoders cannot read."
    ),
    "mosaic": (
        "Siemens MOSAIC image: several slices are tiled in one image. Export the series "
        "without MOSAIC (as single slices) to use it."
    ),
    "other_4d_volume": (
        "Another volume (echo, phase or time point) of a 4D series; the first volume is used."
    ),
    "other_study": "Belongs to another study of the same patient than the chosen series.",
}

#: Reason codes of candidates that form a volume and may be chosen or forced.
_USABLE_CODES = frozenset({"usable", "not_chosen", "chosen_most_slices", "chosen_forced"})
#: Skipped candidates that the caller may still force.
_FORCEABLE_CODES = frozenset({"other_4d_volume", "other_study"})


@dataclass(frozen=True)
class ModalityLut:
    """(0028,3000) Modality LUT Sequence: maps stored values to output units (HU for CT)."""

    first_stored_value: int
    table: np.ndarray  # (entries,) float64, output value of each stored value from the first


@dataclass(frozen=True)
class PixelFormat:
    """How the pixel data of one file is stored, read from its header."""

    transfer_syntax: str
    rows: int
    columns: int
    frame_count: int
    samples_per_pixel: int
    bits_allocated: int
    bits_stored: int
    is_signed: bool
    photometric: str
    #: Byte offset of the (7FE0,0010) value in the member for native little endian data
    #: with a defined length, else None (the data is then decoded through pydicom).
    pixel_offset: int | None
    #: Inclusive range of stored values that (0028,0120) Pixel Padding Value (and
    #: (0028,0121) Pixel Padding Range Limit) mark as padding.
    padding_range: tuple[int, int] | None
    modality_lut: ModalityLut | None

    @property
    def expected_bytes(self) -> int:
        """Return the size of the decoded pixel data of all frames in bytes."""
        bits = self.rows * self.columns * self.frame_count * self.samples_per_pixel
        return bits * self.bits_allocated // 8


@dataclass(frozen=True)
class SliceHeader:
    """Header values of one image (one file, or one frame of a multi-frame file)."""

    member_index: int
    member: ArchiveMember
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
    pixel_format: PixelFormat | None = None
    #: Values of `_VOLUME_KEYWORDS`, as strings, to tell apart the volumes of a 4D series.
    volume_values: tuple[str, ...] = ()


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
    #: 1-based position of this candidate's study among the studies of the upload.
    study_number: int = 1
    #: 1-based volume of a 4D series and the number of volumes; (1, 1) for a 3D series.
    volume_number: int = 1
    volume_count: int = 1

    @property
    def is_usable(self) -> bool:
        """Whether the group forms a CT or MR volume."""
        return self.reason_code in _USABLE_CODES

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
            "study_number": self.study_number,
            "volume_number": self.volume_number,
            "volume_count": self.volume_count,
            "image_count": len(self.slices),
            "slices": self.slice_count,
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
    study_count: int = 1


@dataclass
class _ParsedFile:
    member: ArchiveMember
    series_uid: str
    study_uid: str
    #: SHA-256 of Patient ID and Patient's Name, only compared in memory, never reported.
    patient_key: str | None
    series_number: int | None
    modality: str
    series_description: str
    sop_class_uid: str
    image_type: tuple[str, ...]
    has_pixel_data: bool
    samples_per_pixel: int
    slices: list[SliceHeader]


def discover_series(contents: ArchiveContents) -> StudyIndex:
    """Read the header of every member and group the images into candidates.

    Only the header of each member is inflated (pixel data is not read). Members that are
    not DICOM are skipped with a warning naming their archive index.

    Raises
    ------
    NoDicomFound
        No member is a readable DICOM file.
    MultiplePatients
        The images belong to more than one patient.
    """
    warnings: list[PipelineWarning] = []
    parsed: list[_ParsedFile] = []
    for member in contents.members:
        result, member_warnings = _parse_member(member)
        warnings.extend(member_warnings)
        if result is not None:
            parsed.append(result)

    if not parsed:
        raise NoDicomFound(member_count=contents.member_count)

    patients = {item.patient_key for item in parsed if item.has_pixel_data and item.patient_key}
    if len(patients) > 1:
        raise MultiplePatients(patient_count=len(patients))

    study_numbers = _number_studies(parsed)
    candidates = _group_candidates(parsed, warnings, study_numbers)
    logger.info("Discovered %d series candidates in %d DICOM files", len(candidates), len(parsed))
    return StudyIndex(
        member_count=contents.member_count,
        dicom_file_count=len(parsed),
        candidates=candidates,
        warnings=warnings,
        skipped_members=list(contents.skipped),
        study_count=max(len(study_numbers), 1),
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
        if candidate.is_usable or candidate.reason_code == "other_study":
            candidate.reason_code = "usable"

    usable = [candidate for candidate in index.candidates if candidate.is_usable]

    if series_id is not None:
        matches = [candidate for candidate in index.candidates if candidate.series_id == series_id]
        if not matches:
            raise SeriesNotFound(series_id=series_id)
        chosen = matches[0]
        if not (chosen.is_usable or chosen.reason_code in _FORCEABLE_CODES):
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
        if candidate.study_number != chosen.study_number:
            candidate.reason_code = "other_study"
        else:
            candidate.reason_code = "not_chosen"
    chosen.reason_code = chosen_code
    chosen.chosen = True
    logger.info("Chose series %s (%s)", chosen.series_id, chosen_code)
    return chosen


def can_decode(transfer_syntax: str) -> bool:
    """Return whether pydicom, with the installed plugins, decodes this transfer syntax.

    Native syntaxes (little and big endian, deflated) always decode. An encapsulated one
    needs an available decoder plugin, and a UID pydicom does not know never decodes.
    """
    uid = pydicom.uid.UID(transfer_syntax)
    if not uid.is_transfer_syntax:
        return False
    if not uid.is_encapsulated:
        return True
    try:
        return get_decoder(uid).is_available
    except NotImplementedError:
        return False


def _unsupported_transfer_syntax(candidate: SeriesCandidate) -> UnsupportedTransferSyntax:
    uid = next(
        pydicom.uid.UID(header.pixel_format.transfer_syntax)
        for header in candidate.slices
        if header.pixel_format and not can_decode(header.pixel_format.transfer_syntax)
    )
    # The keyword ("HEVCMP51") is letters and digits only, so it passes the filter on
    # stored error params. A UID that pydicom does not know has no keyword.
    keyword = uid.keyword if uid.is_transfer_syntax and uid.keyword else "unregistered"
    return UnsupportedTransferSyntax(transfer_syntax=keyword, transfer_syntax_uid=str(uid))


def _raise_for_skipped(candidate: SeriesCandidate) -> None:
    """Raise the error for a series the caller forced although it is skipped."""
    if candidate.reason_code == "unsupported_transfer_syntax":
        raise _unsupported_transfer_syntax(candidate)
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
        if largest.reason_code == "unsupported_transfer_syntax":
            raise _unsupported_transfer_syntax(largest)
        modalities = {c.modality for c in images}
        if all(c.reason_code == "unsupported_modality" for c in images):
            raise UnsupportedModality(modality=", ".join(sorted(modalities)) or "unknown")
    raise NoUsableSeries(series_count=len(candidates))


def _parse_member(member: ArchiveMember) -> tuple[_ParsedFile | None, list[PipelineWarning]]:
    """Parse one member's header; return the parsed file (None when skipped) and its warnings."""
    index = member.member_index
    if member.size_bytes == 0:
        return None, [PipelineWarning("member_empty", index)]
    # Only the exception's type is logged: pydicom's messages can quote header values.
    try:
        dataset, pixel_value = _read_header(member)
    except MemberTruncated:
        logger.warning("Member %d is truncated", index)
        return None, [PipelineWarning("member_truncated", index)]
    except InvalidDicomError:
        return None, [PipelineWarning("member_not_dicom", index)]
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types on damaged files
        logger.warning("Member %d could not be parsed: %s", index, type(exc).__name__)
        return None, [PipelineWarning("member_unreadable", index)]

    warnings = []
    charset_problem = check_character_set(dataset)
    if charset_problem is not None:
        warnings.append(PipelineWarning(f"character_set_{charset_problem}", index))
    try:
        return _parsed_file(member, dataset, pixel_value), warnings
    except _PixelDataTooLarge:
        logger.warning("Member %d declares more pixel data than it contains", index)
        return None, [*warnings, PipelineWarning("member_pixel_data_size", index)]
    except Exception as exc:  # noqa: BLE001 - a damaged element surfaces only when read
        logger.warning("Member %d has invalid header values: %s", index, type(exc).__name__)
        return None, [*warnings, PipelineWarning("member_unreadable", index)]


class _PixelDataTooLarge(ValueError):
    """The header's Rows, Columns, frames and bits need more bytes than the member holds."""


def _read_header(member: ArchiveMember) -> tuple[Dataset, int | None | bool]:
    """Parse the header up to the pixel data, inflating only what the parser reads.

    With `stop_before_pixels`, pydicom leaves the stream at the pixel data element when
    there is one, so a position short of the member's end means pixel data follows. Returns
    the data set and the offset of the pixel data value in the member: an int when its
    length is defined, True when the data is encapsulated, False without pixel data.

    pydicom stops quietly at the end of the data, so truncation is detected here: a read
    cut short, an element value shorter than its length, pixel data shorter than declared,
    or an image header (Rows, or an image storage SOP class) with no pixel data after it.
    Raises `MemberTruncated` for those, `InvalidDicomError` for a file that is not DICOM.
    """
    size = member.size_bytes
    with member.open() as handle:
        stream = EndTrackingStream(handle)
        is_part10 = has_part10_prefix(handle)
        try:
            try:
                dataset = pydicom.dcmread(stream, stop_before_pixels=True)
            except InvalidDicomError:
                # No 128-byte preamble and "DICM" prefix: try a bare data set.
                stream.seek(0)
                dataset = pydicom.dcmread(stream, stop_before_pixels=True, force=True)
        except Exception:
            if is_part10 and stream.reached_end:
                raise MemberTruncated() from None
            raise
        looks_like_dicom = _looks_like_dicom(dataset)
        if (is_part10 or looks_like_dicom) and (
            stream.ended_inside_read or has_short_value(dataset)
        ):
            raise MemberTruncated()
        pixel_value: int | bool = False
        if _transfer_syntax(dataset) == pydicom.uid.DeflatedExplicitVRLittleEndian:
            # pydicom inflated the data set into its own buffer, so the position of `handle`
            # does not show where pixel data is. Deflated files are rare: read it again, whole.
            stream.seek(0)
            pixel_value = "PixelData" in pydicom.dcmread(stream)
        elif handle.tell() < size:
            pixel_value = _pixel_value_offset(handle, size)
    if not looks_like_dicom:
        if is_part10:
            raise MemberTruncated()
        raise InvalidDicomError("no SOP Class, SOP Instance, Modality or Series UID")
    if pixel_value is False and expects_pixel_data(dataset):
        raise MemberTruncated()
    return dataset, pixel_value


def _pixel_value_offset(handle: BinaryIO, size: int) -> int | bool:
    """Check the pixel data element's length; return its value offset, or True if undefined.

    `handle` is positioned at the element's tag. Raises `MemberTruncated` when the element
    claims more bytes than the member holds, or when encapsulated data ends before its
    sequence delimiter. The content of the fragments is checked only when it is decoded.
    """
    start = handle.tell()
    header = handle.read(12)
    if len(header) < 8:
        raise MemberTruncated()
    byte_order = ">" if header[:2] == b"\x7f\xe0" else "<"
    if header[4:6] in (b"OB", b"OW", b"OF", b"OD", b"OL", b"OV") and header[6:8] == b"\0\0":
        if len(header) < 12:
            raise MemberTruncated()
        (length,) = struct.unpack(byte_order + "I", header[8:12])
        value_start = start + 12
    else:
        (length,) = struct.unpack(byte_order + "I", header[4:8])
        value_start = start + 8
    if length == _UNDEFINED_LENGTH:
        check_fragments_end(handle, size)
        return True
    if value_start + length > size:
        raise MemberTruncated()
    return value_start


def _looks_like_dicom(dataset: Dataset) -> bool:
    if not len(dataset):
        return False
    keys = ("SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID", "Modality")
    return any(key in dataset for key in keys) or "MediaStorageSOPClassUID" in getattr(
        dataset, "file_meta", {}
    )


def _get(dataset: Dataset, keyword: str) -> Any:
    """Return an element's value, or None when it is absent or its value is invalid.

    pydicom converts values when they are first read, so an invalid value (an integer string
    with a fraction, for instance) raises here and must not make the whole file unreadable.
    """
    try:
        return dataset.get(keyword)
    except Exception:  # noqa: BLE001 - pydicom's value conversion raises many types
        return None


def _parsed_file(member: ArchiveMember, dataset: Dataset, pixel_value: int | bool) -> _ParsedFile:
    file_meta = getattr(dataset, "file_meta", None)
    sop_class_uid = str(
        _get(dataset, "SOPClassUID")
        or (file_meta.get("MediaStorageSOPClassUID", "") if file_meta else "")
    )
    sop_instance_uid = str(_get(dataset, "SOPInstanceUID") or "") or f"member-{member.member_index}"
    image_type = tuple(str(value).upper() for value in _as_list(_get(dataset, "ImageType")))
    parsed = _ParsedFile(
        member=member,
        series_uid=str(_get(dataset, "SeriesInstanceUID") or ""),
        study_uid=str(_get(dataset, "StudyInstanceUID") or ""),
        patient_key=_patient_key(dataset),
        series_number=_to_int(_get(dataset, "SeriesNumber")),
        modality=str(_get(dataset, "Modality") or "").upper(),
        series_description=str(_get(dataset, "SeriesDescription") or ""),
        sop_class_uid=sop_class_uid,
        image_type=image_type,
        has_pixel_data=pixel_value is not False,
        samples_per_pixel=_to_int(_get(dataset, "SamplesPerPixel")) or 1,
        slices=[],
    )
    if pixel_value is not False:
        pixel_format = _pixel_format(member, dataset, pixel_value)
        parsed.slices = _slice_headers(member, dataset, sop_instance_uid, pixel_format)
    return parsed


def _patient_key(dataset: Dataset) -> str | None:
    """Hash Patient ID and Patient's Name, keeping only ASCII letters and digits of each.

    A text decoded with the wrong character set differs only in its non-ASCII characters
    ("JOSÉ", "JOSÃ\x89", "JOS\ufffd"), and exports differ in separators ("SILVA^MARIA",
    "SILVA MARIA"), so neither makes one patient count as two.
    """
    patient_id = _ascii_alphanumerics(_get(dataset, "PatientID"))
    patient_name = _ascii_alphanumerics(_get(dataset, "PatientName"))
    if not (patient_id or patient_name):
        return None
    return hashlib.sha256(f"{patient_id}|{patient_name}".encode()).hexdigest()


def _ascii_alphanumerics(value: Any) -> str:
    return "".join(char for char in str(value or "").upper() if char.isascii() and char.isalnum())


def _transfer_syntax(dataset: Dataset) -> str:
    file_meta = getattr(dataset, "file_meta", None)
    uid = file_meta.get("TransferSyntaxUID") if file_meta else None
    # A bare data set without file meta: implicit VR little endian is the default.
    return str(uid) if uid else "1.2.840.10008.1.2"


def _pixel_format(member: ArchiveMember, dataset: Dataset, pixel_value: int | bool) -> PixelFormat:
    """Describe the member's pixel data and check its size before anything is decoded.

    Raises `_PixelDataTooLarge` when native pixel data would need more bytes than the
    member holds, or compressed data more than the member size limit allows, so a header
    that claims a 65535 x 65535 x 10000 image allocates nothing.
    """
    transfer_syntax = _transfer_syntax(dataset)
    bits_allocated = _to_int(_get(dataset, "BitsAllocated")) or 16
    pixel_format = PixelFormat(
        transfer_syntax=transfer_syntax,
        rows=_to_int(_get(dataset, "Rows")) or 0,
        columns=_to_int(_get(dataset, "Columns")) or 0,
        frame_count=max(_to_int(_get(dataset, "NumberOfFrames")) or 1, 1),
        samples_per_pixel=_to_int(_get(dataset, "SamplesPerPixel")) or 1,
        bits_allocated=bits_allocated,
        bits_stored=_to_int(_get(dataset, "BitsStored")) or bits_allocated,
        is_signed=(_to_int(_get(dataset, "PixelRepresentation")) or 0) == 1,
        photometric=str(_get(dataset, "PhotometricInterpretation") or "MONOCHROME2").upper(),
        pixel_offset=None,
        padding_range=None,
        modality_lut=_modality_lut(dataset),
    )
    pixel_format = replace(pixel_format, padding_range=_padding_range(dataset, pixel_format))
    uid = pydicom.uid.UID(transfer_syntax)
    is_deflated = transfer_syntax == pydicom.uid.DeflatedExplicitVRLittleEndian
    # A UID that pydicom does not know as a transfer syntax is treated as compressed.
    is_compressed = not uid.is_transfer_syntax or uid.is_compressed
    if not is_compressed and not is_deflated:
        # Native data (little or big endian) is stored as is: it must fit in the member.
        if pixel_format.expected_bytes > member.size_bytes:
            raise _PixelDataTooLarge()
    elif pixel_format.expected_bytes > member.max_decoded_bytes:
        raise _PixelDataTooLarge()
    is_direct = (
        transfer_syntax in NATIVE_LITTLE_ENDIAN
        and pixel_format.bits_allocated in (8, 16)
        and pixel_format.samples_per_pixel == 1
        and not isinstance(pixel_value, bool)
    )
    if is_direct:
        pixel_format = replace(pixel_format, pixel_offset=pixel_value)
    return pixel_format


def _padding_range(dataset: Dataset, pixel_format: PixelFormat) -> tuple[int, int] | None:
    padding = _get(dataset, "PixelPaddingValue")
    if padding is None:
        return None
    limits = [_stored_value(padding, pixel_format)]
    range_limit = _get(dataset, "PixelPaddingRangeLimit")
    if range_limit is not None:
        limits.append(_stored_value(range_limit, pixel_format))
    return min(limits), max(limits)


def _stored_value(value: Any, pixel_format: PixelFormat) -> int:
    """Read a US-or-SS element as the stored value; implicit VR may have read it unsigned."""
    number = int(value[0] if isinstance(value, list | tuple) else value)
    bits = pixel_format.bits_allocated
    if pixel_format.is_signed and number >= 1 << (bits - 1):
        number -= 1 << bits
    return number


def _modality_lut(dataset: Dataset) -> ModalityLut | None:
    """Read (0028,3000) Modality LUT Sequence: (0028,3002) LUT Descriptor and (0028,3006) LUT Data.

    The descriptor holds the number of entries (0 means 65536), the first stored value
    mapped and the bits per entry. Returns None when there is no usable LUT.
    """
    sequence = _get(dataset, "ModalityLUTSequence")
    if not sequence:
        return None
    item = sequence[0]
    descriptor = _as_list(_get(item, "LUTDescriptor"))
    if len(descriptor) != 3 or "LUTData" not in item:
        return None
    entries = int(descriptor[0]) or 65536
    first_value = int(descriptor[1])
    bits = int(descriptor[2])
    raw = item["LUTData"].value
    if isinstance(raw, bytes):
        dtype = np.uint8 if bits <= 8 and len(raw) == entries else np.uint16
        table = np.frombuffer(raw, dtype="<" + np.dtype(dtype).str[1:])
    else:
        table = np.asarray(_as_list(raw), dtype=np.float64)
    table = np.asarray(table[:entries], dtype=np.float64)
    if table.size == 0:
        return None
    # A first value above 32767 in a US descriptor stands for a negative signed value.
    if bool(_to_int(_get(dataset, "PixelRepresentation"))) and first_value >= 1 << 15:
        first_value -= 1 << 16
    return ModalityLut(first_stored_value=first_value, table=table)


def _slice_headers(
    member: ArchiveMember, dataset: Dataset, sop_instance_uid: str, pixel_format: PixelFormat
) -> list[SliceHeader]:
    frame_count = pixel_format.frame_count
    base = SliceHeader(
        member_index=member.member_index,
        member=member,
        frame_index=None,
        instance_key=sop_instance_uid,
        rows=pixel_format.rows,
        columns=pixel_format.columns,
        position_lps=_to_floats(_get(dataset, "ImagePositionPatient"), 3),
        orientation=_to_floats(_get(dataset, "ImageOrientationPatient"), 6),
        pixel_spacing_mm=_to_floats(_get(dataset, "PixelSpacing"), 2),
        rescale_slope=_to_float(_get(dataset, "RescaleSlope"), 1.0),
        rescale_intercept=_to_float(_get(dataset, "RescaleIntercept"), 0.0),
        instance_number=_to_int(_get(dataset, "InstanceNumber")),
        pixel_format=pixel_format,
        volume_values=tuple(_volume_value(dataset, keyword) for keyword in _VOLUME_KEYWORDS),
    )
    if frame_count == 1 and "PerFrameFunctionalGroupsSequence" not in dataset:
        return [base]

    # Enhanced multi-frame objects keep geometry and rescale in functional groups, per frame
    # or shared by all frames.
    shared_groups = _get(dataset, "SharedFunctionalGroupsSequence")
    shared = shared_groups[0] if shared_groups else Dataset()
    per_frame_groups = _get(dataset, "PerFrameFunctionalGroupsSequence") or []
    headers = []
    for frame_index in range(frame_count):
        frame = per_frame_groups[frame_index] if frame_index < len(per_frame_groups) else Dataset()

        def functional(sequence: str, keyword: str, frame: Dataset = frame) -> Any:
            for group in (frame, shared):
                items = _get(group, sequence)
                if items and keyword in items[0]:
                    return _get(items[0], keyword)
            return None

        temporal = functional("FrameContentSequence", "TemporalPositionIndex")
        echo = functional("MREchoSequence", "EffectiveEchoTime")
        volume_values = base.volume_values
        if temporal is not None or echo is not None:
            volume_values = (str(echo or ""), str(temporal or ""), *volume_values[2:])
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
                volume_values=volume_values,
            )
        )
    return headers


def _volume_value(dataset: Dataset, keyword: str) -> str:
    value = _get(dataset, keyword)
    if value is None:
        return ""
    return "\\".join(str(item) for item in _as_list(value))


def _number_studies(parsed: list[_ParsedFile]) -> dict[str, int]:
    """Number the studies of the images 1, 2, ... by their first member in the archive.

    Objects without pixel data or without a Study Instance UID do not count as a study.
    """
    numbers: dict[str, int] = {}
    for item in sorted(parsed, key=lambda f: f.member.member_index):
        if item.has_pixel_data and item.study_uid:
            numbers.setdefault(item.study_uid, len(numbers) + 1)
    return numbers


def _group_candidates(
    parsed: list[_ParsedFile], warnings: list[PipelineWarning], study_numbers: dict[str, int]
) -> list[SeriesCandidate]:
    groups: dict[tuple[str, str], list[_ParsedFile]] = defaultdict(list)
    for item in parsed:
        groups[(item.series_uid, _split_key(item))].append(item)

    candidates = []
    for (series_uid, split_key), files in groups.items():
        files.sort(key=lambda f: f.member.member_index)
        slices = _unique_slices(files, warnings)
        first = files[0]
        volumes = _split_volumes(slices)
        for volume_number, (volume_key, volume_slices) in enumerate(volumes, start=1):
            candidate = SeriesCandidate(
                series_id=_series_id(series_uid, split_key + volume_key),
                series_number=first.series_number,
                modality=first.modality,
                series_description=first.series_description,
                slices=tuple(volume_slices),
                reason_code="usable",
                study_number=study_numbers.get(first.study_uid, 1),
                volume_number=volume_number,
                volume_count=len(volumes),
            )
            _assess(candidate, files)
            if volume_number > 1 and candidate.is_usable:
                candidate.reason_code = "other_4d_volume"
            candidates.append(candidate)

    candidates.sort(
        key=lambda c: (
            c.study_number,
            c.series_number is None,
            c.series_number or 0,
            c.volume_number,
            c.series_id,
        )
    )
    return candidates


def _split_volumes(slices: list[SliceHeader]) -> list[tuple[str, list[SliceHeader]]]:
    """Split images that repeat slice positions into volumes by one header value.

    Returns one ("", slices) pair when the positions do not repeat or no value in
    `_VOLUME_KEYWORDS` separates the volumes; otherwise a (key, slices) pair per volume in
    ascending order of the value.
    """
    if len(slices) < 4 or not _has_repeated_positions(slices):
        return [("", slices)]
    for field_index, keyword in enumerate(_VOLUME_KEYWORDS):
        groups: dict[str, list[SliceHeader]] = defaultdict(list)
        for header in slices:
            groups[header.volume_values[field_index]].append(header)
        if len(groups) < 2:
            continue
        if all(len(group) >= 2 and not _has_repeated_positions(group) for group in groups.values()):
            ordered = sorted(groups.items(), key=lambda item: _sort_key(item[0]))
            return [(f"|{keyword}={value}", group) for value, group in ordered]
    return [("", slices)]


def _sort_key(value: str) -> tuple[int, float, str]:
    try:
        return (0, float(value.split("\\")[0]), value)
    except ValueError:
        return (1, 0.0, value)


def _has_repeated_positions(slices: Sequence[SliceHeader]) -> bool:
    positions = [header.position_lps for header in slices if header.position_lps]
    if len(positions) < 2:
        return False
    points = np.round(np.asarray(positions) / POSITION_TOLERANCE_MM).astype(np.int64)
    return len({tuple(point) for point in points}) < len(points)


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
    if any(f.samples_per_pixel != 1 for f in files) or any(
        not s.pixel_format.photometric.startswith("MONOCHROME")
        for s in candidate.slices
        if s.pixel_format
    ):
        candidate.reason_code = "not_grayscale"
        return
    if any(
        not can_decode(s.pixel_format.transfer_syntax) for s in candidate.slices if s.pixel_format
    ):
        candidate.reason_code = "unsupported_transfer_syntax"
        return
    if "MOSAIC" in image_types:
        candidate.reason_code = "mosaic"
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
    if value in (None, ""):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        pass
    try:
        # An integer string written with a fraction ("12.0") still names an integer.
        number = float(str(value).strip())
    except (TypeError, ValueError):
        return None
    return int(number) if np.isfinite(number) and number == int(number) else None


def _to_float(value: Any, default: float) -> float:
    try:
        return float(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        return default


def _to_floats(value: Any, count: int) -> tuple[float, ...] | None:
    values = _as_list(value)
    if len(values) == 1 and isinstance(values[0], str | bytes) and count > 1:
        # A multi-valued element stored as one string with another separator.
        text = values[0].decode("ascii", "replace") if isinstance(values[0], bytes) else values[0]
        values = [part for part in _MULTI_VALUE_SEPARATOR.split(text.strip()) if part]
    if len(values) != count:
        return None
    try:
        result = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        return None
    return result if all(np.isfinite(result)) else None
