"""Synthetic CT-like volumes with known regions, for segmenter and client tests."""

from dataclasses import dataclass

import numpy as np

AIR_HU = -1000.0
LUNG_HU = -850.0
ADIPOSE_HU = -100.0
SOFT_TISSUE_HU = 40.0
BONE_HU = 700.0


@dataclass(frozen=True)
class ChestPhantom:
    """A windowed chest-like volume and the boolean (z, y, x) truth of each region."""

    image: np.ndarray
    spacing_mm: np.ndarray
    outside: np.ndarray
    adipose: np.ndarray
    soft_tissue: np.ndarray
    lungs: np.ndarray
    airway: np.ndarray
    bone: np.ndarray


def window_ct(hu: np.ndarray) -> np.ndarray:
    """Window HU to 0..1 with centre 40 HU and width 400 HU, as the inference API expects."""
    return np.clip((hu + 160.0) / 400.0, 0.0, 1.0).astype(np.float32)


def make_chest_phantom(
    shape_zyx: tuple[int, int, int] = (40, 128, 160),
    spacing_mm: tuple[float, float, float] = (2.5, 1.5, 1.5),
    *,
    noise_hu: float = 10.0,
    seed: int = 7,
) -> ChestPhantom:
    """Build a body ellipse with a fat ring, two lungs, a trachea above them and a spine.

    The trachea runs from the first slice down to a third of the volume, centred left-right,
    and the lungs fill the slices from a quarter of the volume to the last.
    """
    depth, height, width = shape_zyx
    _, y, x = np.ogrid[:depth, :height, :width]
    z = np.arange(depth)[:, None, None]
    centre_y, centre_x = height / 2.0, width / 2.0

    def ellipse(cy, cx, ry, rx):
        return ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1.0

    body_outer = np.broadcast_to(
        ellipse(centre_y, centre_x, 0.42 * height, 0.44 * width), shape_zyx
    )
    body_inner = np.broadcast_to(
        ellipse(centre_y, centre_x, 0.42 * height - 6, 0.44 * width - 6), shape_zyx
    )
    lung_slices = z >= depth // 4
    lung_ry, lung_rx = 0.22 * height, 0.14 * width
    lung_left = ellipse(centre_y - 0.04 * height, centre_x - 0.2 * width, lung_ry, lung_rx)
    lung_right = ellipse(centre_y - 0.04 * height, centre_x + 0.2 * width, lung_ry, lung_rx)
    lungs = (lung_left | lung_right) & lung_slices
    airway = ellipse(centre_y - 0.12 * height, centre_x, 5, 5) & (z < depth // 3)
    bone = np.broadcast_to(ellipse(centre_y + 0.28 * height, centre_x, 7, 9), shape_zyx)

    hu = np.full(shape_zyx, AIR_HU, dtype=np.float32)
    hu[body_outer] = ADIPOSE_HU
    hu[body_inner] = SOFT_TISSUE_HU
    hu[lungs] = LUNG_HU
    hu[airway] = AIR_HU
    hu[bone] = BONE_HU
    rng = np.random.default_rng(seed)
    hu += rng.normal(0.0, noise_hu, size=shape_zyx).astype(np.float32)

    adipose = body_outer & ~body_inner
    soft_tissue = body_inner & ~lungs & ~airway & ~bone
    return ChestPhantom(
        image=window_ct(hu),
        spacing_mm=np.asarray(spacing_mm, dtype=np.float32),
        outside=~body_outer,
        adipose=np.asarray(adipose),
        soft_tissue=np.asarray(soft_tissue),
        lungs=np.asarray(lungs),
        airway=np.asarray(airway),
        bone=np.asarray(bone & body_inner),
    )
