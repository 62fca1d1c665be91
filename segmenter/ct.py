"""Classical CT segmentation by intensity thresholds, connectivity and morphology.

The input is the windowed image of the inference API (window centre 40 HU, width 400 HU, so
0.0 is -160 HU and 1.0 is 240 HU). Air and lung both clip to 0, so they are distinguished by
connectivity: air outside the body reaches the in-plane border, lungs are large dark
components inside the body outline, and the airway is a thin dark tube near the centre line.
The result is deterministic: the same input always gives the same mask.

This is a reference for development and testing, not a clinical model.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

WINDOW_LOW_HU = -160.0
WINDOW_WIDTH_HU = 400.0

# Connectivity within one axial slice only, so that 3D calls act slice by slice.
IN_PLANE_CROSS = np.zeros((3, 3, 3), dtype=bool)
IN_PLANE_CROSS[1] = ndimage.generate_binary_structure(2, 1)
IN_PLANE_SQUARE = np.zeros((3, 3, 3), dtype=bool)
IN_PLANE_SQUARE[1] = True


@dataclass(frozen=True)
class Thresholds:
    """Intensity limits in HU and size limits of the segmentation."""

    #: Voxels at or below this are air or lung, because the window clips everything under -160 HU.
    dark_max_hu: float = -140.0
    adipose_max_hu: float = -30.0
    bone_min_hu: float = 200.0
    #: Cross-section of one slice of trachea or main bronchus, in mm^2.
    airway_min_area_mm2: float = 15.0
    airway_max_area_mm2: float = 700.0
    #: Maximum distance of an airway centroid from the body's centre line, as a fraction of
    #: the body width in that slice.
    airway_max_offset_fraction: float = 0.15
    airway_min_length_mm: float = 20.0
    lung_min_volume_mm3: float = 20_000.0
    #: A second lung component must contain at least this fraction of the largest one.
    lung_second_min_fraction: float = 0.2
    #: Body components other than the largest must contain at least this fraction of it.
    body_part_min_fraction: float = 0.1


def hu_to_window(hu: float) -> float:
    """Convert a value in HU to the 0..1 scale of the windowed image."""
    return (hu - WINDOW_LOW_HU) / WINDOW_WIDTH_HU


def segment_ct(
    image: np.ndarray,
    spacing_mm: np.ndarray,
    label_values: Mapping[str, int],
    *,
    on_progress: Callable[[int], None] | None = None,
    thresholds: Thresholds | None = None,
) -> np.ndarray:
    """Segment a windowed CT volume into the requested categories.

    ``image`` is float32 (z, y, x) in 0..1 and ``spacing_mm`` is (z, y, x) in mm.
    ``label_values`` maps the category keys to write (``lung``, ``airway``,
    ``adipose_tissue``, ``soft_tissue``, ``bone``) to their label values, and categories
    left out stay 0. Returns a uint8 mask of the image's shape. ``on_progress`` receives a
    percentage after each stage and may raise to stop the work.
    """
    thresholds = thresholds or Thresholds()
    report = on_progress or (lambda percent: None)
    spacing_mm = np.asarray(spacing_mm, dtype=np.float64)
    dark = image <= hu_to_window(thresholds.dark_max_hu)

    body = find_body(~dark, thresholds=thresholds)
    report(30)
    dark_inside = dark & body
    airway = find_airway(dark_inside, body, spacing_mm, thresholds=thresholds)
    report(50)
    lung = find_lungs(dark_inside & ~airway, spacing_mm, thresholds=thresholds)
    report(70)

    # Fat sits about 40 HU above the dark threshold and 70 HU below soft tissue, so noise
    # speckles both borders. A 3 x 3 in-plane mean decides them instead. Air, lung and bone
    # use the unfiltered image, because the mean would blur their thin high-contrast edges.
    smoothed = ndimage.uniform_filter(image, size=(1, 3, 3), mode="nearest")
    tissue = body & (smoothed > hu_to_window(thresholds.dark_max_hu)) & ~lung & ~airway
    is_adipose_value = smoothed <= hu_to_window(thresholds.adipose_max_hu)
    # The opening removes the one-voxel rims of partial volume at air/tissue borders,
    # which fall in the adipose band without being fat.
    adipose = ndimage.binary_opening(tissue & is_adipose_value, structure=IN_PLANE_CROSS)
    bone = tissue & (image >= hu_to_window(thresholds.bone_min_hu))
    soft_tissue = tissue & ~is_adipose_value & ~bone
    report(90)

    mask = np.zeros(image.shape, dtype=np.uint8)
    # Later regions win where two overlap; by construction they are nearly disjoint.
    for key, region in (
        ("soft_tissue", soft_tissue),
        ("adipose_tissue", adipose),
        ("bone", bone),
        ("lung", lung),
        ("airway", airway),
    ):
        if key in label_values:
            mask[region] = label_values[key]
    return mask


def fill_holes_per_slice(mask: np.ndarray) -> np.ndarray:
    """Fill the holes of each axial slice of a (z, y, x) mask.

    ``scipy.ndimage.binary_fill_holes`` on the whole volume would treat the first and last
    slices as border, so background is labelled in-plane and only the components that
    reach the in-plane border are kept as background.
    """
    background_labels, _ = ndimage.label(~mask, structure=IN_PLANE_CROSS)
    border_labels = np.concatenate(
        [
            background_labels[:, 0, :].ravel(),
            background_labels[:, -1, :].ravel(),
            background_labels[:, :, 0].ravel(),
            background_labels[:, :, -1].ravel(),
        ]
    )
    is_outside = np.zeros(background_labels.max() + 1, dtype=bool)
    is_outside[border_labels] = True
    is_outside[0] = False
    return ~is_outside[background_labels]


def find_body(tissue: np.ndarray, *, thresholds: Thresholds) -> np.ndarray:
    """Find the body: the largest 3D component of filled tissue, plus large other parts.

    NOTE: the CT table or a positioning cushion that touches the body, or that is larger
    than ``body_part_min_fraction`` of it, is kept as body.
    """
    tissue = ndimage.binary_opening(tissue, structure=IN_PLANE_CROSS)
    filled = fill_holes_per_slice(tissue)
    labels, count = ndimage.label(filled)
    if count == 0:
        return filled
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    keep = sizes >= thresholds.body_part_min_fraction * sizes.max()
    keep[0] = False
    return keep[labels]


def find_airway(
    dark_inside: np.ndarray,
    body: np.ndarray,
    spacing_mm: np.ndarray,
    *,
    thresholds: Thresholds,
) -> np.ndarray:
    """Find the trachea and main bronchi: thin dark tubes near the body's centre line.

    A slice's dark component is a candidate when its area fits an airway cross-section and
    its centroid lies near the body's left-right centre. Candidates linked across slices
    form tubes, and tubes shorter than ``airway_min_length_mm`` are dropped. Lung apices
    are off the centre line, so they do not qualify.

    NOTE: air in the oesophagus is also a thin central tube and is labelled airway.
    """
    labels, count = ndimage.label(dark_inside, structure=IN_PLANE_SQUARE)
    if count == 0:
        return np.zeros_like(dark_inside)

    flat_index = np.flatnonzero(labels)
    component = labels.ravel()[flat_index]
    z_index, _, x_index = np.unravel_index(flat_index, labels.shape)
    voxel_count = np.bincount(component, minlength=count + 1)
    safe_count = np.maximum(voxel_count, 1)
    centroid_x = np.bincount(component, weights=x_index, minlength=count + 1) / safe_count
    slice_of = (np.bincount(component, weights=z_index, minlength=count + 1) / safe_count).astype(
        np.intp
    )

    # Left-right extent of the body in each slice, from its projection along y.
    body_columns = body.any(axis=1)
    has_body = body_columns.any(axis=1)
    x_min = np.argmax(body_columns, axis=1)
    x_max = body_columns.shape[1] - 1 - np.argmax(body_columns[:, ::-1], axis=1)
    centre_x = (x_min + x_max) / 2.0
    width_x = np.maximum(x_max - x_min + 1, 1)

    area_mm2 = voxel_count * spacing_mm[1] * spacing_mm[2]
    offset_fraction = np.abs(centroid_x - centre_x[slice_of]) / width_x[slice_of]
    is_candidate = (
        (area_mm2 >= thresholds.airway_min_area_mm2)
        & (area_mm2 <= thresholds.airway_max_area_mm2)
        & (offset_fraction <= thresholds.airway_max_offset_fraction)
        & has_body[slice_of]
    )
    is_candidate[0] = False
    candidates = is_candidate[labels]

    tubes, tube_count = ndimage.label(candidates, structure=np.ones((3, 3, 3), dtype=bool))
    airway = np.zeros_like(candidates)
    for index, bounds in enumerate(ndimage.find_objects(tubes), start=1):
        if bounds is None:
            continue
        length_mm = (bounds[0].stop - bounds[0].start) * spacing_mm[0]
        if length_mm >= thresholds.airway_min_length_mm:
            airway[bounds] |= tubes[bounds] == index
    return airway


def find_lungs(
    dark_candidates: np.ndarray, spacing_mm: np.ndarray, *, thresholds: Thresholds
) -> np.ndarray:
    """Find the lungs: the one or two largest dark components inside the body.

    Vessels inside the lung are soft-tissue dense, so holes are filled slice by slice.

    NOTE: on a scan without lungs (abdomen only) a large gas-filled bowel loop passes the
    volume limit and is labelled lung.
    """
    labels, count = ndimage.label(dark_candidates)
    if count == 0:
        return np.zeros_like(dark_candidates)
    voxel_volume_mm3 = float(np.prod(spacing_mm))
    sizes_mm3 = np.bincount(labels.ravel()).astype(np.float64) * voxel_volume_mm3
    sizes_mm3[0] = 0.0
    order = np.argsort(sizes_mm3)[::-1]
    largest = sizes_mm3[order[0]]
    keep = np.zeros(count + 1, dtype=bool)
    for rank, index in enumerate(order[:2]):
        size = sizes_mm3[index]
        if size < thresholds.lung_min_volume_mm3:
            break
        if rank == 1 and size < thresholds.lung_second_min_fraction * largest:
            break
        keep[index] = True
    lung = keep[labels]
    return fill_holes_per_slice(lung) if lung.any() else lung
