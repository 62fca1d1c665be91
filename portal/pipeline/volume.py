"""Build a volume in HU (CT) or rescaled stored values (MR) with its RAS affine.

Slices are sorted by their position projected on the slice normal, never by
InstanceNumber. A stack whose slices lie on a regular grid along the normal is stacked as
it is. A tilted stack (gantry tilt shears the slice positions sideways) or an unevenly
spaced one is resampled onto an orthogonal grid along the normal at the median step, so
that one affine describes it: each slice is first shifted in-plane onto a common canvas
(bilinear), then the canvas stack is interpolated linearly along the normal.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.pixels import get_decoder

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
from .series import SeriesCandidate, SliceHeader

logger = logging.getLogger(__name__)

#: Value given to padding pixels and to regions outside the field of view after a shift.
CT_AIR_HU = -1024.0
MR_BACKGROUND = 0.0

_PYLIBJPEG = "pylibjpeg"


@dataclass(frozen=True)
class Volume:
    """A series as one volume on an orthogonal grid.

    Attributes
    ----------
    hu_zyx : ndarray of float32, shape (z, y, x)
        z along the slice normal, y along rows, x along columns. HU for CT; rescaled stored
        values for MR (no windowing).
    affine_ras : ndarray of float64, shape (4, 4)
        Maps NIfTI voxel index (i = x column, j = y row, k = z slice) to RAS mm.
    spacing_mm : (z, y, x) float
    slice_count : int
        Number of distinct slices in the series, before any resampling.
    tilt_deg : float
        Angle between the slice normal and the line through the slice positions.
    was_resampled : bool
        Whether tilt or uneven spacing required resampling along the normal.
    """

    hu_zyx: np.ndarray
    affine_ras: np.ndarray
    spacing_mm: tuple[float, float, float]
    modality: str
    series_description: str
    slice_count: int
    tilt_deg: float = 0.0
    was_resampled: bool = False


def background_value(modality: str) -> float:
    """Return the value of air: -1024 HU for CT, 0 for MR."""
    return CT_AIR_HU if modality == "CT" else MR_BACKGROUND


def load_volume(
    candidate: SeriesCandidate, warnings: list[PipelineWarning] | None = None
) -> Volume:
    """Decode the slices of `candidate` and build its volume.

    Identical copies at one position are dropped with a warning; `warnings` (if given)
    receives it and the note that slices were resampled.

    Raises
    ------
    PixelDecodeFailed
        A slice's pixel data cannot be decoded.
    InconsistentGeometry
        Different images share one position (a 4D or multi-echo series), or fewer than two
        positions remain.
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

    images = _decode_slices(candidate.slices, candidate.modality)
    headers, images = _drop_duplicate_positions(candidate.slices, images, plane, warnings)
    if len(headers) < 2:
        raise InconsistentGeometry(reason="fewer than two slice positions")

    stack = stack_geometry(plane, [header.position_lps for header in headers])
    if stack.has_gap:
        raise SliceGap(gap_mm=stack.max_step_mm, step_mm=stack.median_step_mm)
    ordered = np.stack([images[i] for i in stack.order])
    origin = np.asarray(headers[stack.order[0]].position_lps, dtype=np.float64)

    if stack.is_regular:
        step = (stack.distances_mm[-1] - stack.distances_mm[0]) / (len(headers) - 1)
        hu_zyx = ordered
    else:
        hu_zyx, origin, step = _resample_along_normal(ordered, plane, stack, origin, fill)
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

    spacing_mm = (float(step), plane.row_spacing_mm, plane.column_spacing_mm)
    affine_ras = ras_affine_from_lps(
        origin, plane.row_cosine, plane.column_cosine, plane.normal, spacing_mm
    )
    logger.info(
        "Built volume %s from %d slices (resampled: %s)",
        hu_zyx.shape,
        len(headers),
        not stack.is_regular,
    )
    return Volume(
        hu_zyx=hu_zyx.astype(np.float32, copy=False),
        affine_ras=affine_ras,
        spacing_mm=spacing_mm,
        modality=candidate.modality,
        series_description=candidate.series_description,
        slice_count=len(headers),
        tilt_deg=stack.tilt_deg,
        was_resampled=not stack.is_regular,
    )


def _decode_slices(slices: tuple[SliceHeader, ...], modality: str) -> list[np.ndarray]:
    """Decode every slice to float32 values after rescale and padding, in input order."""
    by_path: dict[Path, list[int]] = defaultdict(list)
    for position, header in enumerate(slices):
        by_path[header.path].append(position)

    images: list[np.ndarray | None] = [None] * len(slices)
    for path, positions in by_path.items():
        member_index = slices[positions[0]].member_index
        dataset, frames = _read_pixels(path, member_index)
        if frames.ndim == 2:
            frames = frames[np.newaxis]  # pydicom drops the frame axis of a single frame
        for position in positions:
            header = slices[position]
            stored = frames[header.frame_index or 0]
            if stored.shape != (header.rows, header.columns):
                raise PixelDecodeFailed(
                    member_index=member_index, transfer_syntax="unexpected frame shape"
                )
            images[position] = stored_to_values(stored, dataset, header, modality)
    return images  # type: ignore[return-value]


def _read_pixels(path: Path, member_index: int) -> tuple[Dataset, np.ndarray]:
    """Read a file and decode all of its frames, through pylibjpeg for JPEG and JPEG 2000."""
    try:
        dataset = pydicom.dcmread(path, force=True)
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
    stored: np.ndarray, dataset: Dataset, header: SliceHeader, modality: str
) -> np.ndarray:
    """Convert stored pixel values of one slice to HU (CT) or rescaled values (MR).

    Unsigned values are masked to (0028,0101) Bits Stored, (0028,1052)/(0028,1053) Rescale
    Intercept/Slope are applied in float64, and pixels equal to (0028,0120) Pixel Padding
    Value (or within the range up to (0028,0121) Pixel Padding Range Limit) become air.

    Returns
    -------
    ndarray of float32, shape (rows, columns)
    """
    values = np.asarray(stored)
    bits_stored = int(dataset.get("BitsStored", values.dtype.itemsize * 8) or 0)
    is_signed = int(dataset.get("PixelRepresentation", 0) or 0) == 1
    if values.dtype.kind == "u" and 0 < bits_stored < values.dtype.itemsize * 8:
        # Bits above Bits Stored are not part of the value (old overlays live there).
        values = values & np.array((1 << bits_stored) - 1, dtype=values.dtype)

    padding = _padding_mask(values, dataset, is_signed)
    rescaled = values.astype(np.float64) * header.rescale_slope + header.rescale_intercept
    if padding is not None:
        rescaled[padding] = background_value(modality)
    return rescaled.astype(np.float32)


def _padding_mask(values: np.ndarray, dataset: Dataset, is_signed: bool) -> np.ndarray | None:
    if "PixelPaddingValue" not in dataset:
        return None
    bits_allocated = int(dataset.get("BitsAllocated", 16) or 16)
    limits = [_stored_value(dataset.PixelPaddingValue, is_signed, bits_allocated)]
    if "PixelPaddingRangeLimit" in dataset:
        limits.append(_stored_value(dataset.PixelPaddingRangeLimit, is_signed, bits_allocated))
    low, high = min(limits), max(limits)
    return (values >= low) & (values <= high)


def _stored_value(value: object, is_signed: bool, bits_allocated: int) -> int:
    """Read a US-or-SS element as the stored value; implicit VR may have read it unsigned."""
    number = int(value[0] if isinstance(value, list | tuple) else value)  # type: ignore[arg-type]
    if is_signed and number >= 1 << (bits_allocated - 1):
        number -= 1 << bits_allocated
    return number


def _drop_duplicate_positions(
    slices: tuple[SliceHeader, ...],
    images: list[np.ndarray],
    plane: PlaneGeometry,
    warnings: list[PipelineWarning],
) -> tuple[list[SliceHeader], list[np.ndarray]]:
    """Keep one of several identical images at one position; reject differing ones."""
    positions = np.asarray([header.position_lps for header in slices], dtype=np.float64)
    order = np.argsort(positions @ plane.normal, kind="stable")
    kept_headers: list[SliceHeader] = []
    kept_images: list[np.ndarray] = []
    for index in order:
        header, image = slices[index], images[index]
        if kept_headers:
            previous = np.asarray(kept_headers[-1].position_lps)
            if np.max(np.abs(positions[index] - previous)) <= POSITION_TOLERANCE_MM:
                if not np.array_equal(image, kept_images[-1]):
                    raise InconsistentGeometry(
                        reason="different images at one slice position (4D or multi-echo)"
                    )
                warnings.append(PipelineWarning("duplicate_slice_dropped", header.member_index))
                continue
        kept_headers.append(header)
        kept_images.append(image)
    return kept_headers, kept_images


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

    Returns the volume, the LPS position of its voxel (0, 0, 0) and its z step in mm.
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
