"""Build a volume in HU (CT) or rescaled stored values (MR) with its RAS affine.

Slices are sorted by their position projected on the slice normal, never by
InstanceNumber. A stack whose slices lie on a regular grid along the normal is stacked as
it is. A tilted stack (gantry tilt shears the slice positions sideways) or an unevenly
spaced one is resampled onto an orthogonal grid along the normal at the median step, so
that one affine describes it: each slice is first shifted in-plane onto a common canvas
(bilinear), then the canvas stack is interpolated linearly along the normal.

Slices are decoded one at a time, in their sorted order, straight into one preallocated
array. Values stay in int16 while every slice's rescale is an integer shift and the result
fits; otherwise the array becomes float32 once. A `SliceSink` given to `load_volume` receives
each slice of a regular stack as soon as it is decoded, so the caller can compress it while
the next slice decodes.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.encaps import get_frame
from pydicom.pixels import get_decoder
from pydicom.pixels.utils import get_j2k_parameters

from .errors import InconsistentGeometry, PixelDecodeFailed, SliceGap
from .geometry import (
    POSITION_TOLERANCE_MM,
    PlaneGeometry,
    StackGeometry,
    plane_geometry,
    stack_geometry,
)
from .nifti import ras_affine_from_lps
from .report import PipelineWarning
from .resample import sample_linear
from .series import PixelFormat, SeriesCandidate, SliceHeader

logger = logging.getLogger(__name__)

#: Value given to padding pixels and to regions outside the field of view after a shift.
CT_AIR_HU = -1024.0
MR_BACKGROUND = 0.0

_PYLIBJPEG = "pylibjpeg"
_INT16_MIN, _INT16_MAX = np.iinfo(np.int16).min, np.iinfo(np.int16).max


class SliceSink(Protocol):
    """Receiver of the slices of a regular stack, in order, while the volume is decoded."""

    def start(
        self, shape_zyx: tuple[int, int, int], dtype: np.dtype, affine_ras: np.ndarray
    ) -> None:
        """Prepare for `shape_zyx[0]` slices of `dtype` on the grid of `affine_ras`."""

    def write_slice(self, slice_yx: np.ndarray) -> None:
        """Take the next slice; the array is not modified afterwards."""

    def abort(self) -> None:
        """Drop what was written: the volume will not match what was announced."""


@dataclass(frozen=True)
class Volume:
    """A series as one volume on an orthogonal grid.

    Attributes
    ----------
    hu_zyx : ndarray of int16 or float32, shape (z, y, x)
        z along the slice normal, y along rows, x along columns. HU for CT; rescaled stored
        values for MR (no windowing). int16 when every value is an integer in its range.
    affine_ras : ndarray of float64, shape (4, 4)
        Maps NIfTI voxel index (i = x column, j = y row, k = z slice) to RAS mm.
    spacing_mm : (z, y, x) float
    slice_count : int
        Number of distinct slices in the series, before any resampling.
    tilt_deg : float
        Angle between the slice normal and the line through the slice positions.
    was_resampled : bool
        Whether tilt or uneven spacing required resampling along the normal.
    streamed : bool
        Whether every slice of `hu_zyx` went to the `SliceSink` unchanged.
    """

    hu_zyx: np.ndarray
    affine_ras: np.ndarray
    spacing_mm: tuple[float, float, float]
    modality: str
    series_description: str
    slice_count: int
    tilt_deg: float = 0.0
    was_resampled: bool = False
    streamed: bool = False


def background_value(modality: str) -> float:
    """Return the value of air: -1024 HU for CT, 0 for MR."""
    return CT_AIR_HU if modality == "CT" else MR_BACKGROUND


def load_volume(
    candidate: SeriesCandidate,
    warnings: list[PipelineWarning] | None = None,
    *,
    sink: SliceSink | None = None,
) -> Volume:
    """Decode the slices of `candidate` in position order and build its volume.

    Identical copies at one position are dropped with a warning. Different images at one
    position (a 4D series that no header value split) keep the first by Instance Number,
    with a warning. `warnings` (if given) receives these and the note that slices were
    resampled. The archive the candidate was read from must still be open.

    Raises
    ------
    PixelDecodeFailed
        A slice's pixel data cannot be decoded.
    InconsistentGeometry
        Fewer than two slice positions remain.
    SliceGap
        A step between slices exceeds twice the median step.
    """
    if warnings is None:
        warnings = []
    first = candidate.slices[0]
    if not (first.orientation and first.pixel_spacing_mm):
        raise InconsistentGeometry(reason="missing orientation or pixel spacing")
    plane = plane_geometry(first.orientation, first.pixel_spacing_mm)
    fill = background_value(candidate.modality)

    positions = _group_by_position(candidate.slices, plane)
    if len(positions) < 2:
        raise InconsistentGeometry(reason="fewer than two slice positions")
    stack = stack_geometry(plane, [group[0].position_lps for group in positions])
    if stack.has_gap:
        raise SliceGap(gap_mm=stack.max_step_mm, step_mm=stack.median_step_mm)
    # `positions` is sorted along the normal already, so the stack's order is the identity.
    origin = np.asarray(positions[0][0].position_lps, dtype=np.float64)
    step = (stack.distances_mm[-1] - stack.distances_mm[0]) / (len(positions) - 1)
    spacing_mm = (float(step), plane.row_spacing_mm, plane.column_spacing_mm)

    stream_to = sink if stack.is_regular else None
    decoder = _SliceDecoder(candidate.modality, warnings)
    ordered, streamed = _decode_stack(
        positions, decoder, plane, spacing_mm, origin, stream_to, warnings
    )

    if stack.is_regular:
        hu_zyx = ordered
    else:
        hu_zyx, origin, step = _resample_along_normal(ordered, plane, stack, origin, fill)
        spacing_mm = (float(step), plane.row_spacing_mm, plane.column_spacing_mm)
        steps = np.diff(stack.distances_mm)
        warnings.append(
            PipelineWarning(
                "slices_resampled",
                params={
                    "tilt_deg": round(stack.tilt_deg, 2),
                    "min_step_mm": round(float(steps.min()), 4),
                    "max_step_mm": round(float(steps.max()), 4),
                },
            )
        )

    affine_ras = ras_affine_from_lps(
        origin, plane.row_cosine, plane.column_cosine, plane.normal, spacing_mm
    )
    logger.info(
        "Built volume %s (%s) from %d slices (resampled: %s)",
        hu_zyx.shape,
        hu_zyx.dtype,
        len(positions),
        not stack.is_regular,
    )
    return Volume(
        hu_zyx=hu_zyx,
        affine_ras=affine_ras,
        spacing_mm=spacing_mm,
        modality=candidate.modality,
        series_description=candidate.series_description,
        slice_count=len(positions),
        tilt_deg=stack.tilt_deg,
        was_resampled=not stack.is_regular,
        streamed=streamed,
    )


def _group_by_position(
    slices: tuple[SliceHeader, ...], plane: PlaneGeometry
) -> list[list[SliceHeader]]:
    """Sort images along the normal and group those at one position (first by Instance Number)."""
    points = np.asarray([header.position_lps for header in slices], dtype=np.float64)
    distances = points @ plane.normal
    tie_break = [
        (h.instance_number is None, h.instance_number or 0, h.member_index, h.frame_index or 0)
        for h in slices
    ]
    order = sorted(range(len(slices)), key=lambda i: (distances[i], tie_break[i]))
    groups: list[list[int]] = []
    for index in order:
        previous = points[groups[-1][0]] if groups else None
        if (
            previous is not None
            and np.max(np.abs(points[index] - previous)) <= POSITION_TOLERANCE_MM
        ):
            groups[-1].append(index)
        else:
            groups.append([index])
    return [[slices[i] for i in sorted(group, key=tie_break.__getitem__)] for group in groups]


def _decode_stack(
    positions: list[list[SliceHeader]],
    decoder: _SliceDecoder,
    plane: PlaneGeometry,
    spacing_mm: tuple[float, float, float],
    origin_lps: np.ndarray,
    sink: SliceSink | None,
    warnings: list[PipelineWarning],
) -> tuple[np.ndarray, bool]:
    """Decode the first image at each position into one (z, y, x) array, in order.

    Returns the array and whether the sink received every slice of it.
    """
    first = positions[0][0]
    shape_zyx = (len(positions), first.rows, first.columns)
    dtype = (
        np.dtype(np.int16)
        if all(decoder.fits_int16(header) for group in positions for header in group)
        else np.dtype(np.float32)
    )
    volume = np.empty(shape_zyx, dtype=dtype)
    streaming = sink is not None
    if sink is not None:
        affine_ras = ras_affine_from_lps(
            origin_lps, plane.row_cosine, plane.column_cosine, plane.normal, spacing_mm
        )
        sink.start(shape_zyx, dtype, affine_ras)

    repeated_positions = 0
    try:
        for k, group in enumerate(positions):
            kept = group[0]
            values = decoder.decode(kept)
            if volume.dtype == np.int16 and not _fits_int16(values):
                # A value outside int16 (a wide MR range, for instance): switch to float32
                # once, and the streamed slices no longer match.
                volume = volume.astype(np.float32)
                if streaming and sink is not None:
                    sink.abort()
                    streaming = False
            volume[k] = values
            if streaming and sink is not None:
                sink.write_slice(volume[k])
            differs = False
            for other in group[1:]:
                if np.array_equal(decoder.decode(other), values):
                    warnings.append(PipelineWarning("duplicate_slice_dropped", other.member_index))
                else:
                    differs = True
            repeated_positions += differs
    except BaseException:
        if streaming and sink is not None:
            sink.abort()
        raise
    if repeated_positions:
        warnings.append(
            PipelineWarning(
                "repeated_positions_first_volume", params={"position_count": repeated_positions}
            )
        )
    return volume, streaming


def _fits_int16(values: np.ndarray) -> bool:
    if values.dtype == np.int16:
        return True
    if values.dtype.kind == "f" and not np.array_equal(values, np.rint(values)):
        return False
    return bool(values.size == 0 or (values.min() >= _INT16_MIN and values.max() <= _INT16_MAX))


class _SliceDecoder:
    """Decode images to values, reading each member once and keeping its frames for reuse."""

    def __init__(self, modality: str, warnings: list[PipelineWarning]) -> None:
        self.modality = modality
        self._warnings = warnings
        self._frames_member: int | None = None
        self._frames: np.ndarray | None = None
        self._dataset: Dataset | None = None

    def fits_int16(self, header: SliceHeader) -> bool:
        """Whether the image's values are integers by its header (the range is checked later)."""
        pixel_format = header.pixel_format
        if pixel_format is None:
            return False
        if pixel_format.modality_lut is not None:
            table = pixel_format.modality_lut.table
            return bool(np.array_equal(table, np.rint(table)))
        return header.rescale_slope == int(header.rescale_slope) and float(
            header.rescale_intercept
        ) == int(header.rescale_intercept)

    def decode(self, header: SliceHeader) -> np.ndarray:
        """Return the image's values: int32 when integral, else float32; shape (rows, columns)."""
        pixel_format = header.pixel_format
        if pixel_format is None:
            raise PixelDecodeFailed(
                member_index=header.member_index, transfer_syntax="no pixel data"
            )
        if pixel_format.pixel_offset is not None:
            stored = self._read_native(header, pixel_format)
        else:
            stored = self._read_frame(header, pixel_format)
        if stored.shape != (header.rows, header.columns):
            raise PixelDecodeFailed(
                member_index=header.member_index, transfer_syntax="unexpected frame shape"
            )
        return stored_to_values(stored, pixel_format, header, self.modality)

    def _read_native(self, header: SliceHeader, pixel_format: PixelFormat) -> np.ndarray:
        data = header.member.read_bytes()
        dtype = np.dtype(
            f"<{'i' if pixel_format.is_signed else 'u'}{pixel_format.bits_allocated // 8}"
        )
        frame_pixels = pixel_format.rows * pixel_format.columns
        offset = (
            pixel_format.pixel_offset + (header.frame_index or 0) * frame_pixels * dtype.itemsize
        )
        if offset + frame_pixels * dtype.itemsize > len(data):
            raise PixelDecodeFailed(member_index=header.member_index, transfer_syntax="truncated")
        flat = np.frombuffer(data, dtype=dtype, count=frame_pixels, offset=offset)
        return flat.reshape(pixel_format.rows, pixel_format.columns)

    def _read_frame(self, header: SliceHeader, pixel_format: PixelFormat) -> np.ndarray:
        if self._frames_member != header.member_index:
            self._frames = None
            self._dataset, frames = _read_pixels(header.member.read_bytes(), header.member_index)
            if _stream_sign_differs(self._dataset, pixel_format):
                self._warnings.append(PipelineWarning("pixel_sign_mismatch", header.member_index))
            self._frames = frames[np.newaxis] if frames.ndim == 2 else frames
            self._frames_member = header.member_index
        frames = self._frames
        frame_index = header.frame_index or 0
        if frames is None or frame_index >= len(frames):
            raise PixelDecodeFailed(
                member_index=header.member_index, transfer_syntax="missing frame"
            )
        return frames[frame_index]


def _read_pixels(data: bytes, member_index: int) -> tuple[Dataset, np.ndarray]:
    """Parse a member and decode all of its frames, through pylibjpeg for JPEG and JPEG 2000."""
    try:
        dataset = pydicom.dcmread(io.BytesIO(data), force=True)
        transfer_syntax = dataset.file_meta.get("TransferSyntaxUID") if dataset.file_meta else None
        if transfer_syntax is None:
            # A bare data set without file meta: implicit VR little endian is the default.
            transfer_syntax = pydicom.uid.ImplicitVRLittleEndian
            dataset.file_meta = pydicom.dataset.FileMetaDataset()
            dataset.file_meta.TransferSyntaxUID = transfer_syntax
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types on damaged files
        raise PixelDecodeFailed(member_index=member_index, transfer_syntax="unreadable") from exc

    plugin = decoding_plugin(transfer_syntax)
    try:
        dataset.pixel_array_options(decoding_plugin=plugin)
        frames = dataset.pixel_array
    except Exception as exc:  # noqa: BLE001 - decoders raise many types on damaged data
        name = getattr(transfer_syntax, "name", str(transfer_syntax))
        raise PixelDecodeFailed(member_index=member_index, transfer_syntax=name) from exc
    return dataset, frames


def _stream_sign_differs(dataset: Dataset, pixel_format: PixelFormat) -> bool:
    """Return whether a JPEG 2000 codestream's signedness differs from Pixel Representation.

    The decoded values then follow (0028,0103) Pixel Representation: pydicom 3.0's JPEG
    2000 sign correction reinterprets the same Bits Stored bit pattern as signed or
    unsigned, and `stored_to_values` sign-extends from Bits Stored.
    NOTE: JPEG-LS and JPEG Lossless streams carry no signedness. Data encoded from signed
    values under an unsigned header is therefore not detected, and it is read as unsigned.
    """
    uid = pydicom.uid.UID(pixel_format.transfer_syntax)
    if uid not in pydicom.uid.JPEG2000TransferSyntaxes:
        return False
    try:
        frame = get_frame(dataset.PixelData, 0, number_of_frames=pixel_format.frame_count)
        is_signed = get_j2k_parameters(frame).get("is_signed")
    except Exception:  # noqa: BLE001 - a damaged stream already decoded; no verdict then
        return False
    return is_signed is not None and bool(is_signed) != pixel_format.is_signed


def decoding_plugin(transfer_syntax: pydicom.uid.UID) -> str:
    """Return the pixel decoding plugin for a transfer syntax: "pylibjpeg" where it applies.

    JPEG (baseline, extended, lossless), JPEG-LS and JPEG 2000 go through pylibjpeg's
    libjpeg and openjpeg plugins. Native and RLE data use pydicom's own decoders ("").
    """
    uid = pydicom.uid.UID(str(transfer_syntax))
    if not uid.is_compressed:
        return ""
    try:
        decoder = get_decoder(uid)
    except NotImplementedError:
        return ""
    return _PYLIBJPEG if _PYLIBJPEG in decoder.available_plugins else ""


def stored_to_values(
    stored: np.ndarray, pixel_format: PixelFormat, header: SliceHeader, modality: str
) -> np.ndarray:
    """Convert stored pixel values of one slice to HU (CT) or rescaled values (MR).

    Bits above (0028,0101) Bits Stored are cleared (unsigned) or replaced by the sign bit
    (signed). (0028,3000) Modality LUT Sequence, when present, maps the stored values;
    otherwise (0028,1053) Rescale Slope and (0028,1052) Rescale Intercept apply. Pixels
    within (0028,0120) Pixel Padding Value and (0028,0121) Pixel Padding Range Limit become
    air before any interpolation.

    Returns
    -------
    ndarray of int32 (integral rescale or LUT) or float32, shape (rows, columns)
    """
    values = np.asarray(stored)
    bits_stored = pixel_format.bits_stored
    width = values.dtype.itemsize * 8
    if values.dtype.kind in "ui" and 0 < bits_stored < width:
        if values.dtype.kind == "u":
            # Bits above Bits Stored are not part of the value (old overlays live there).
            values = values & np.array((1 << bits_stored) - 1, dtype=values.dtype)
        else:
            shift = width - bits_stored
            values = (values << shift) >> shift

    padding = None
    if pixel_format.padding_range is not None:
        low, high = pixel_format.padding_range
        padding = (values >= low) & (values <= high)

    lut = pixel_format.modality_lut
    if lut is not None:
        index = np.clip(values.astype(np.int64) - lut.first_stored_value, 0, lut.table.size - 1)
        table = lut.table
        if np.array_equal(table, np.rint(table)):
            result = table.astype(np.int32)[index]
        else:
            result = table.astype(np.float32)[index]
    elif header.rescale_slope == int(header.rescale_slope) and float(
        header.rescale_intercept
    ) == int(header.rescale_intercept):
        result = values.astype(np.int32)
        if header.rescale_slope != 1:
            result *= int(header.rescale_slope)
        result += int(header.rescale_intercept)
    else:
        result = (
            values.astype(np.float64) * header.rescale_slope + header.rescale_intercept
        ).astype(np.float32)

    if padding is not None and padding.any():
        result[padding] = background_value(modality)
    return result


def _resample_along_normal(
    ordered_zyx: np.ndarray,
    plane: PlaneGeometry,
    stack: StackGeometry,
    origin_lps: np.ndarray,
    fill_value: float,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Resample a sheared or unevenly spaced stack onto an orthogonal grid.

    The output grid's x and y axes are the slices' row and column cosines, its z axis the
    normal, with the median step. In-plane, it spans the union of all slices' fields of
    view; regions no slice covers take `fill_value`.

    Returns the volume (float32), the LPS position of its voxel (0, 0, 0) and its z step in mm.
    """
    slice_count, rows, columns = ordered_zyx.shape
    dx, dy = plane.column_spacing_mm, plane.row_spacing_mm
    offsets_x = stack.offsets_mm[:, 0]
    offsets_y = stack.offsets_mm[:, 1]
    start_x, start_y = float(offsets_x.min()), float(offsets_y.min())
    out_columns = columns + int(np.ceil((offsets_x.max() - start_x) / dx - 1e-6))
    out_rows = rows + int(np.ceil((offsets_y.max() - start_y) / dy - 1e-6))

    canvas = np.empty((slice_count, out_rows, out_columns), dtype=np.float32)
    column_grid = np.arange(out_columns, dtype=np.float64)
    row_grid = np.arange(out_rows, dtype=np.float64)
    for k in range(slice_count):
        # Output column c lies at in-plane x = start_x + c * dx; slice k's column 0 at offsets_x[k].
        shifted = sample_linear(
            ordered_zyx[k], 1, column_grid + (start_x - offsets_x[k]) / dx, fill_value
        )
        canvas[k] = sample_linear(shifted, 0, row_grid + (start_y - offsets_y[k]) / dy, fill_value)

    step = stack.median_step_mm
    distances = stack.distances_mm
    out_slices = int(round((distances[-1] - distances[0]) / step)) + 1
    targets = distances[0] + step * np.arange(out_slices)
    source_index = np.interp(targets, distances, np.arange(slice_count, dtype=np.float64))
    volume = sample_linear(canvas, 0, source_index)

    origin = origin_lps + start_x * plane.row_cosine + start_y * plane.column_cosine
    return volume, origin, float(step)
