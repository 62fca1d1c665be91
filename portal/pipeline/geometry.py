"""Slice geometry in the DICOM patient frame (LPS, millimetres).

A slice is placed by (0020,0032) Image Position (Patient), the centre of its first stored
pixel, and (0020,0037) Image Orientation (Patient): the row cosine (direction of increasing
column index) then the column cosine (direction of increasing row index). (0028,0030)
Pixel Spacing gives the row spacing (between rows, along the column cosine) first and the
column spacing second. The slice normal is row cosine x column cosine.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: Two positions closer than this are the same position, and a slice whose position is off
#: its ideal place on a regular grid by less than this needs no resampling.
POSITION_TOLERANCE_MM = 0.01

#: A step between neighbouring slices above this multiple of the median step is a gap.
MAX_GAP_FACTOR = 2.0


@dataclass(frozen=True)
class PlaneGeometry:
    """Orientation and pixel spacing shared by all slices of a series."""

    row_cosine: np.ndarray  # (3,) LPS, direction of increasing column index (x)
    column_cosine: np.ndarray  # (3,) LPS, direction of increasing row index (y)
    normal: np.ndarray  # (3,) LPS, row_cosine x column_cosine (z)
    row_spacing_mm: float  # distance between rows, along column_cosine
    column_spacing_mm: float  # distance between columns, along row_cosine


@dataclass(frozen=True)
class StackGeometry:
    """Where the slices of a series lie relative to each other.

    Attributes
    ----------
    order : ndarray of int
        Indices into the input positions sorting them by distance along the normal.
    distances_mm : ndarray of float64
        Sorted distances of the slice planes along the normal, from the origin of LPS.
    offsets_mm : ndarray of float64, shape (n, 2)
        Sorted in-plane offsets of each slice's first pixel relative to the first slice,
        along the row cosine (x) then the column cosine (y). Zero for an untilted stack.
    """

    order: np.ndarray
    distances_mm: np.ndarray
    offsets_mm: np.ndarray
    median_step_mm: float
    max_step_mm: float
    is_regular: bool
    tilt_deg: float

    @property
    def has_gap(self) -> bool:
        """Whether a step exceeds `MAX_GAP_FACTOR` times the median step."""
        return self.max_step_mm > MAX_GAP_FACTOR * self.median_step_mm


def plane_geometry(orientation: Sequence[float], pixel_spacing: Sequence[float]) -> PlaneGeometry:
    """Build orthonormal slice axes from (0020,0037) and (0028,0030).

    The cosines stored in DICOM are rounded; they are re-orthonormalised here so that the
    affine built from them is a rotation times a scaling.
    """
    values = np.asarray(orientation, dtype=np.float64)
    row_cosine = values[:3] / np.linalg.norm(values[:3])
    column_cosine = values[3:] - np.dot(values[3:], row_cosine) * row_cosine
    column_cosine /= np.linalg.norm(column_cosine)
    normal = np.cross(row_cosine, column_cosine)
    return PlaneGeometry(
        row_cosine=row_cosine,
        column_cosine=column_cosine,
        normal=normal,
        row_spacing_mm=float(pixel_spacing[0]),
        column_spacing_mm=float(pixel_spacing[1]),
    )


def stack_geometry(plane: PlaneGeometry, positions: Sequence[Sequence[float]]) -> StackGeometry:
    """Sort slice positions along the normal and measure steps, gaps and tilt.

    `positions` are the (0020,0032) values of distinct slices; at least two are needed.
    InstanceNumber plays no part: only the projection on the normal orders the slices.
    """
    points = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    distances = points @ plane.normal
    order = np.argsort(distances, kind="stable")
    points = points[order]
    distances = distances[order]

    relative = points - points[0]
    offsets = np.stack([relative @ plane.row_cosine, relative @ plane.column_cosine], axis=1)

    steps = np.diff(distances)
    median_step = float(np.median(steps)) if steps.size else 0.0
    max_step = float(steps.max()) if steps.size else 0.0

    is_regular = bool(np.all(np.abs(offsets) <= POSITION_TOLERANCE_MM))
    if is_regular and steps.size:
        mean_step = (distances[-1] - distances[0]) / steps.size
        ideal = distances[0] + mean_step * np.arange(distances.size)
        is_regular = bool(np.all(np.abs(distances - ideal) <= POSITION_TOLERANCE_MM))

    tilt_deg = 0.0
    travel = points[-1] - points[0]
    travel_length = float(np.linalg.norm(travel))
    if travel_length > 0:
        cosine = abs(float(travel @ plane.normal)) / travel_length
        tilt_deg = float(np.degrees(np.arccos(min(cosine, 1.0))))

    return StackGeometry(
        order=order,
        distances_mm=distances,
        offsets_mm=offsets,
        median_step_mm=median_step,
        max_step_mm=max_step,
        is_regular=is_regular,
        tilt_deg=tilt_deg,
    )


def orientation_label(normal: np.ndarray) -> str:
    """Name the plane whose normal is closest to `normal`: axial, coronal or sagittal.

    Returns "oblique" when no patient axis is within about 35 degrees of the normal.
    """
    magnitudes = np.abs(normal)
    axis = int(np.argmax(magnitudes))
    if magnitudes[axis] < 0.8:
        return "oblique"
    return ("sagittal", "coronal", "axial")[axis]


def distinct_positions(
    positions: Sequence[Sequence[float]], normal: np.ndarray
) -> list[tuple[float, float, float]]:
    """Return the positions with repeats (within `POSITION_TOLERANCE_MM`) removed.

    Positions are compared after sorting along `normal`, so repeats are found in
    O(n log n); the first occurrence in sorted order is kept.
    """
    points = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    order = np.argsort(points @ normal, kind="stable")
    kept: list[np.ndarray] = []
    for point in points[order]:
        if kept and np.max(np.abs(point - kept[-1])) <= POSITION_TOLERANCE_MM:
            continue
        kept.append(point)
    return [(float(p[0]), float(p[1]), float(p[2])) for p in kept]
