"""NIfTI-1 writers and the one function that builds the RAS affine from DICOM geometry.

DICOM positions are LPS (x to the patient's left, y to posterior); NIfTI and NiiVue use RAS
(x to the right, y to anterior). Every affine in the pipeline comes from
`ras_affine_from_lps` and is then only composed with voxel-index maps, so image and mask
always agree. Arrays in the pipeline are (z, y, x); NIfTI stores (x, y, z), so the writers
transpose.
"""

from __future__ import annotations

import logging
import queue
import threading
import zlib
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

try:
    from isal import isal_zlib as _gzip_backend

    #: ISA-L's fastest level that still compresses well (ISA-L has levels 0 to 3).
    _GZIP_LEVEL = 1
except ImportError:  # pragma: no cover - isal is a pinned dependency
    _gzip_backend = zlib
    _GZIP_LEVEL = 1

logger = logging.getLogger(__name__)

#: qform and sform code written with the affine: 1 = scanner-based anatomical coordinates.
XFORM_CODE_SCANNER = 1
#: NIFTI_INTENT_LABEL: voxel values are label indices.
NIFTI_INTENT_LABEL = 1002

_INT16_MIN, _INT16_MAX = np.iinfo(np.int16).min, np.iinfo(np.int16).max
#: wbits value that makes zlib (and ISA-L) write a gzip member instead of a zlib stream.
_GZIP_WBITS = 31
#: NIfTI-1 single file: 348-byte header, then 4 bytes of extension flags, then the data.
_NIFTI_VOX_OFFSET = 352
_QUEUE_SLICES = 16


def ras_affine_from_lps(
    origin_lps: Sequence[float],
    x_axis_lps: Sequence[float],
    y_axis_lps: Sequence[float],
    z_axis_lps: Sequence[float],
    spacing_mm_zyx: Sequence[float],
) -> np.ndarray:
    """Build the 4x4 RAS affine of a voxel grid described in DICOM (LPS) terms.

    Parameters
    ----------
    origin_lps : (3,) float
        LPS position in mm of the centre of voxel (0, 0, 0), e.g. (0020,0032) Image
        Position (Patient) of the first slice.
    x_axis_lps, y_axis_lps, z_axis_lps : (3,) float
        Unit vectors along increasing voxel index i (columns, the row cosine of (0020,0037)),
        j (rows, the column cosine) and k (slices, the slice normal).
    spacing_mm_zyx : (3,) float
        Voxel spacing along k, j, i in mm.

    Returns
    -------
    ndarray of float64, shape (4, 4)
        Maps NIfTI voxel indices (i, j, k, 1) to RAS mm: the LPS affine with its x and y rows
        negated.
    """
    spacing_z, spacing_y, spacing_x = (float(value) for value in spacing_mm_zyx)
    affine = np.eye(4)
    affine[:3, 0] = np.asarray(x_axis_lps, dtype=np.float64) * spacing_x
    affine[:3, 1] = np.asarray(y_axis_lps, dtype=np.float64) * spacing_y
    affine[:3, 2] = np.asarray(z_axis_lps, dtype=np.float64) * spacing_z
    affine[:3, 3] = np.asarray(origin_lps, dtype=np.float64)
    affine[:2, :] *= -1.0
    return affine


def write_image_nifti(hu_zyx: np.ndarray, affine_ras: np.ndarray, path: Path) -> Path:
    """Write a HU volume (z, y, x) as int16 NIfTI, rounded and clipped to the int16 range."""
    values = np.asarray(hu_zyx)
    if values.dtype != np.int16:
        # Rounded slice by slice in float32, so no float64 copy of the volume is made.
        rounded = np.empty(values.shape, dtype=np.int16)
        for index, slice_yx in enumerate(values):
            clipped = np.clip(
                np.rint(slice_yx.astype(np.float32, copy=False)), _INT16_MIN, _INT16_MAX
            )
            rounded[index] = clipped
        values = rounded
    return write_native_nifti(values, affine_ras, Path(path))


def write_mask_nifti(mask_zyx: np.ndarray, affine_ras: np.ndarray, path: Path) -> Path:
    """Write a label mask (z, y, x) as uint8 NIfTI with intent NIFTI_INTENT_LABEL.

    The mask must already be on the image's grid: it is written as given, never
    interpolated.

    Raises
    ------
    ValueError
        The mask is not 3D, not of an integer or boolean dtype, or has values outside 0..255.
    """
    mask = np.asarray(mask_zyx)
    if mask.ndim != 3:
        raise ValueError(f"mask must be 3D (z, y, x), got shape {mask.shape}")
    if not (np.issubdtype(mask.dtype, np.integer) or mask.dtype == np.bool_):
        raise ValueError(f"mask must hold integer labels, got dtype {mask.dtype}")
    if mask.size and (mask.min() < 0 or mask.max() > 255):
        raise ValueError("mask labels must lie in 0..255")
    return _write_nifti(mask.astype(np.uint8), affine_ras, Path(path), is_label=True)


def _write_nifti(
    data_zyx: np.ndarray, affine_ras: np.ndarray, path: Path, *, is_label: bool
) -> Path:
    affine = np.asarray(affine_ras, dtype=np.float64)
    data_xyz = np.ascontiguousarray(data_zyx.transpose(2, 1, 0))
    image = nib.Nifti1Image(data_xyz, affine)
    header = image.header
    header.set_data_dtype(data_zyx.dtype)
    image.set_qform(affine, code=XFORM_CODE_SCANNER)
    image.set_sform(affine, code=XFORM_CODE_SCANNER)
    header.set_xyzt_units(xyz="mm", t="sec")
    header.set_slope_inter(1.0, 0.0)
    if is_label:
        header.set_intent("label", name="label")
    nib.save(image, str(path))
    return path


def native_nifti_header(
    shape_zyx: Sequence[int], dtype: np.dtype, affine_ras: np.ndarray
) -> nib.Nifti1Header:
    """Build the NIfTI-1 header of an image volume: mm units, qform and sform set to the affine."""
    header = nib.Nifti1Header()
    header.set_data_shape(tuple(int(n) for n in reversed(tuple(shape_zyx))))
    header.set_data_dtype(np.dtype(dtype))
    affine = np.asarray(affine_ras, dtype=np.float64)
    header.set_qform(affine, code=XFORM_CODE_SCANNER)
    header.set_sform(affine, code=XFORM_CODE_SCANNER)
    header.set_xyzt_units(xyz="mm", t="sec")
    header.set_slope_inter(1.0, 0.0)
    header["vox_offset"] = _NIFTI_VOX_OFFSET
    return header


def native_file_affine(affine_ras: np.ndarray, rows: int) -> np.ndarray:
    """Return the affine of `native.nii.gz`, which stores each slice's rows last to first.

    dcm2niix 1.0.20260724 stores rows in that order too, so both files carry the same
    orientation codes: L, A, S for an axial series rather than L, P, S. `affine_ras` maps
    the (column, row, slice) indices of the volume.
    """
    flip_rows = np.eye(4)
    flip_rows[1, 1] = -1.0
    flip_rows[1, 3] = rows - 1
    return np.asarray(affine_ras, dtype=np.float64) @ flip_rows


class NativeNiftiWriter:
    """Write a gzip-compressed NIfTI-1 volume slice by slice, compressing in a thread.

    A NIfTI volume stores x fastest, then y, then z, which is the memory order of a C-order
    (z, y, x) array, so each slice is appended as it comes. With `reverse_rows`, each
    slice's rows are written last to first with the affine of `native_file_affine`. zlib
    and ISA-L release the GIL while they compress, so the thread compresses one slice while
    the caller decodes the next. Use `start`, `write_slice` per slice, then `finish`;
    `abort` removes the file. Values are written as given: int16 or float32, no scaling.
    """

    def __init__(self, path: Path, *, reverse_rows: bool = False) -> None:
        self.path = Path(path)
        self.reverse_rows = reverse_rows
        self.completed = False
        self._queue: queue.Queue[np.ndarray | None] = queue.Queue(maxsize=_QUEUE_SLICES)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._expected_slices = 0
        self._written_slices = 0
        self._aborted = False

    def start(
        self, shape_zyx: tuple[int, int, int], dtype: np.dtype, affine_ras: np.ndarray
    ) -> None:
        """Write the header and start the compressing thread; `affine_ras` is the volume's."""
        self.affine_ras = (
            native_file_affine(affine_ras, int(shape_zyx[1]))
            if self.reverse_rows
            else np.asarray(affine_ras, dtype=np.float64)
        )
        header = native_nifti_header(shape_zyx, dtype, self.affine_ras)
        self._dtype = np.dtype(dtype)
        self._expected_slices = int(shape_zyx[0])
        prefix = header.binaryblock + b"\0" * (_NIFTI_VOX_OFFSET - len(header.binaryblock))
        self._thread = threading.Thread(
            target=self._compress, args=(prefix,), name="native-nifti-gzip", daemon=True
        )
        self._thread.start()

    def write_slice(self, slice_yx: np.ndarray) -> None:
        """Queue one slice; it must not change until `finish` returns."""
        if self._aborted:
            return
        if self._error is not None:
            raise self._error
        rows = slice_yx[::-1] if self.reverse_rows else slice_yx
        self._queue.put(np.ascontiguousarray(rows, dtype=self._dtype))
        self._written_slices += 1

    def finish(self) -> Path:
        """Wait for the thread to write everything and return the path."""
        if self._thread is None:
            raise RuntimeError("start() was not called")
        if self._written_slices != self._expected_slices:
            self.abort()
            raise ValueError(
                f"{self._written_slices} slices written, {self._expected_slices} announced"
            )
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error
        self.completed = True
        return self.path

    def abort(self) -> None:
        """Stop the thread and remove the partial file."""
        if self._aborted:
            return
        self._aborted = True
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
        self.path.unlink(missing_ok=True)

    def _compress(self, prefix: bytes) -> None:
        try:
            compressor = _gzip_backend.compressobj(_GZIP_LEVEL, zlib.DEFLATED, _GZIP_WBITS)
            with open(self.path, "wb") as target:
                target.write(compressor.compress(prefix))
                while (item := self._queue.get()) is not None:
                    if not self._aborted:
                        target.write(compressor.compress(memoryview(item).cast("B")))
                target.write(compressor.flush())
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            logger.warning("Compressing %s failed: %s", self.path.name, type(exc).__name__)
            self._error = exc
            # Keep draining so the producer never blocks on a full queue.
            while self._queue.get() is not None:
                pass


def write_native_nifti(
    volume_zyx: np.ndarray, affine_ras: np.ndarray, path: Path, *, reverse_rows: bool = False
) -> Path:
    """Write a volume as gzip NIfTI, int16 when it is int16, else float32.

    `reverse_rows` writes the rows of each slice last to first, as `native.nii.gz` stores them.
    """
    volume = np.asarray(volume_zyx)
    dtype = np.dtype(np.int16) if volume.dtype == np.int16 else np.dtype(np.float32)
    writer = NativeNiftiWriter(path, reverse_rows=reverse_rows)
    writer.start(volume.shape, dtype, affine_ras)
    try:
        for slice_yx in volume:
            writer.write_slice(slice_yx)
    except BaseException:
        writer.abort()
        raise
    return writer.finish()


def write_native_mask(
    mask_zyx: np.ndarray, model_affine_ras: np.ndarray, native_image_path: Path, out_path: Path
) -> Path:
    """Resample a label mask from the model grid onto the native image's grid and write it.

    Each native voxel takes the label of the model voxel nearest to its centre (nearest
    neighbour, never a linear blend of labels). The output has the native image's shape
    and affine and the label intent. Only the native image's header is read.

    Parameters
    ----------
    mask_zyx : ndarray of integer labels, shape (z, y, x) of the model grid
    model_affine_ras : ndarray (4, 4), the model grid's affine (voxel index to RAS mm)
    native_image_path : Path of `native.nii.gz`
    out_path : Path of the mask to write, such as `mask_native.nii.gz`
    """
    native = nib.load(str(native_image_path))
    native_affine = np.asarray(native.affine, dtype=np.float64)
    native_shape_zyx = tuple(int(n) for n in reversed(native.shape[:3]))
    mask = np.asarray(mask_zyx)
    # Native voxel index (i, j, k) to model voxel index.
    native_to_model = np.linalg.inv(np.asarray(model_affine_ras, dtype=np.float64)) @ native_affine
    linear = native_to_model[:3, :3]
    off_diagonal = linear - np.diag(np.diag(linear))
    if np.allclose(off_diagonal, 0.0, atol=1e-6):
        # The grids share their axes (the model grid scales the native one), so the nearest
        # model index along each axis depends on that axis alone.
        index_xyz = [
            _nearest_indices(native_to_model[axis, axis], native_to_model[axis, 3], size, model)
            for axis, (size, model) in enumerate(
                zip(reversed(native_shape_zyx), reversed(mask.shape), strict=True)
            )
        ]
        resampled = mask[np.ix_(index_xyz[2], index_xyz[1], index_xyz[0])]
    else:
        resampled = _nearest_general(mask, native_to_model, native_shape_zyx)
    return write_mask_nifti(resampled, native_affine, out_path)


def _nearest_indices(scale: float, offset: float, count: int, model_count: int) -> np.ndarray:
    positions = scale * np.arange(count, dtype=np.float64) + offset
    return np.clip(np.floor(positions + 0.5), 0, model_count - 1).astype(np.intp)


def _nearest_general(
    mask_zyx: np.ndarray, native_to_model: np.ndarray, native_shape_zyx: tuple[int, ...]
) -> np.ndarray:
    """Nearest-neighbour resampling for grids whose axes differ, one native slice at a time."""
    depth, rows, columns = native_shape_zyx
    result = np.zeros(native_shape_zyx, dtype=mask_zyx.dtype)
    j, i = np.mgrid[0:rows, 0:columns]
    upper = np.array(mask_zyx.shape[::-1]) - 1
    for k in range(depth):
        ijk = np.stack([i.ravel(), j.ravel(), np.full(i.size, k), np.ones(i.size)])
        model = np.floor(native_to_model[:3] @ ijk + 0.5).astype(np.intp)
        inside = np.all((model >= 0) & (model <= upper[:, None]), axis=0)
        values = np.zeros(i.size, dtype=mask_zyx.dtype)
        values[inside] = mask_zyx[model[2, inside], model[1, inside], model[0, inside]]
        result[k] = values.reshape(rows, columns)
    return result
