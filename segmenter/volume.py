"""Validation of the input NPZ that a client uploads with a job."""

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REQUIRED_KEYS = ("image", "spacing_mm", "modality", "categories")

# The image is windowed to 0..1; a little slack absorbs float rounding in the client.
IMAGE_VALUE_TOLERANCE = 1e-3


class InvalidVolume(Exception):
    """An input NPZ that breaks the contract; ``code`` is stable and ``message`` is English."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Volume:
    """A validated input volume.

    ``image`` is float32 (z, y, x) windowed to 0..1, ``spacing_mm`` is float32 (z, y, x) and
    ``categories`` contains the requested label values (empty means all).
    """

    image: np.ndarray
    spacing_mm: np.ndarray
    modality: str
    categories: tuple[int, ...]


def load_volume(path: Path, *, max_voxels: int, known_labels: set[int]) -> Volume:
    """Load and validate an input NPZ without unpickling anything.

    Raises ``InvalidVolume`` with a stable code when the file is not an uncompressed NPZ
    with exactly the keys ``image``, ``spacing_mm``, ``modality`` and ``categories`` of the
    expected dtypes and shapes, or when ``image`` has more than ``max_voxels`` voxels.
    """
    _check_archive(path, max_voxels=max_voxels)
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in REQUIRED_KEYS}
    except ValueError as error:
        # numpy raises ValueError for object arrays when allow_pickle is False.
        raise InvalidVolume(
            "pickle_not_allowed", f"the NPZ could not be loaded without pickle: {error}"
        ) from error
    except (OSError, EOFError, zipfile.BadZipFile) as error:
        raise InvalidVolume("invalid_npz", f"the NPZ could not be read: {error}") from error

    image = _check_image(arrays["image"], max_voxels=max_voxels)
    spacing_mm = _check_spacing(arrays["spacing_mm"])
    modality = _check_modality(arrays["modality"])
    categories = _check_categories(arrays["categories"], known_labels=known_labels)
    return Volume(image=image, spacing_mm=spacing_mm, modality=modality, categories=categories)


def _check_archive(path: Path, *, max_voxels: int) -> None:
    if not zipfile.is_zipfile(path):
        raise InvalidVolume("invalid_npz", "the volume is not an NPZ (ZIP) file")
    with zipfile.ZipFile(path) as archive:
        members = archive.infolist()
    names = [member.filename for member in members]
    expected = {f"{key}.npy" for key in REQUIRED_KEYS}
    missing = sorted(name[:-4] for name in expected - set(names))
    if missing:
        raise InvalidVolume("missing_key", f"the NPZ lacks the arrays {missing}")
    unexpected = sorted(set(names) - expected)
    if unexpected or len(names) != len(expected):
        raise InvalidVolume(
            "unexpected_key",
            f"the NPZ contains arrays other than {list(REQUIRED_KEYS)}: {unexpected or names}",
        )
    if any(member.compress_type != zipfile.ZIP_STORED for member in members):
        raise InvalidVolume(
            "compressed_npz", "the NPZ must be uncompressed (numpy.savez, not savez_compressed)"
        )
    # The image is the only large member: float32 voxels plus a header, the rest is small.
    max_bytes = max_voxels * 4 + 64 * 1024
    total_bytes = sum(member.file_size for member in members)
    if total_bytes > max_bytes:
        raise InvalidVolume(
            "volume_too_large",
            f"the NPZ holds {total_bytes} bytes, more than the maximum of {max_bytes}",
        )


def _check_image(image: np.ndarray, *, max_voxels: int) -> np.ndarray:
    if image.dtype != np.float32:
        raise InvalidVolume("invalid_dtype", f"image must be float32, not {image.dtype}")
    if image.ndim != 3 or 0 in image.shape:
        raise InvalidVolume(
            "invalid_shape", f"image must be a non-empty (z, y, x) array, not {image.shape}"
        )
    if image.size > max_voxels:
        raise InvalidVolume(
            "volume_too_large",
            f"image has {image.size} voxels, more than the maximum of {max_voxels}",
        )
    if not np.isfinite(image).all():
        raise InvalidVolume("invalid_value", "image contains NaN or infinite values")
    low, high = float(image.min()), float(image.max())
    if low < -IMAGE_VALUE_TOLERANCE or high > 1.0 + IMAGE_VALUE_TOLERANCE:
        raise InvalidVolume(
            "invalid_value",
            f"image values must be windowed to 0..1, found {low:.4g}..{high:.4g}",
        )
    return image


def _check_spacing(spacing_mm: np.ndarray) -> np.ndarray:
    if spacing_mm.dtype != np.float32:
        raise InvalidVolume("invalid_dtype", f"spacing_mm must be float32, not {spacing_mm.dtype}")
    if spacing_mm.shape != (3,):
        raise InvalidVolume(
            "invalid_shape", f"spacing_mm must have shape (3,), not {spacing_mm.shape}"
        )
    if not (np.isfinite(spacing_mm).all() and (spacing_mm > 0).all()):
        raise InvalidVolume(
            "invalid_value", f"spacing_mm must be finite and positive, not {spacing_mm.tolist()}"
        )
    return spacing_mm


def _check_modality(modality: np.ndarray) -> str:
    if modality.dtype.kind != "U" or modality.ndim != 0:
        raise InvalidVolume(
            "invalid_dtype",
            f"modality must be a numpy unicode scalar, not {modality.dtype} with shape "
            f"{modality.shape}",
        )
    value = str(modality[()])
    if not value or len(value) > 16:
        raise InvalidVolume("invalid_value", "modality must be a short name such as CT or MR")
    return value


def _check_categories(categories: np.ndarray, *, known_labels: set[int]) -> tuple[int, ...]:
    if categories.dtype != np.int32:
        raise InvalidVolume("invalid_dtype", f"categories must be int32, not {categories.dtype}")
    if categories.ndim != 1:
        raise InvalidVolume(
            "invalid_shape", f"categories must be one-dimensional, not {categories.shape}"
        )
    return check_label_values([int(value) for value in categories], known_labels=known_labels)


def check_label_values(values: list[int], *, known_labels: set[int]) -> tuple[int, ...]:
    """Return the requested label values sorted, rejecting unknown or repeated ones."""
    unknown = sorted(set(values) - known_labels)
    if unknown:
        raise InvalidVolume(
            "unknown_category",
            f"categories {unknown} are not in the catalogue {sorted(known_labels)}",
        )
    if len(set(values)) != len(values):
        raise InvalidVolume("invalid_value", f"categories contain repeated values: {values}")
    return tuple(sorted(values))
