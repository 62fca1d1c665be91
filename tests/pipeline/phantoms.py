"""Synthetic DICOM series with known geometry and values, and ZIPs built from them.

Each pixel's value is a function of its LPS world position (mm), so a test can compute the
exact value any output voxel should have at any world point.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    MRImageStorage,
    RLELossless,
    SecondaryCaptureImageStorage,
    generate_uid,
)

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
SAGITTAL = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
CORONAL = (1.0, 0.0, 0.0, 0.0, 0.0, -1.0)

#: Identifiers planted in every synthetic file, so privacy tests can look for them.
PATIENT_NAME = "SILVA^MARIA^PHANTOM"
PATIENT_ID = "PID-93417"
STUDY_DATE = "20190317"
BIRTH_DATE = "19580704"
ACCESSION_NUMBER = "ACC-55120"
UID_ROOT = "1.2.826.0.1.3680043.8.498."


def tilted_axial(tilt_deg: float) -> tuple[float, ...]:
    """Return an axial orientation whose column cosine is tilted about x, as a gantry tilt."""
    angle = np.radians(tilt_deg)
    return (1.0, 0.0, 0.0, 0.0, float(np.cos(angle)), float(-np.sin(angle)))


def linear_field(world_lps: np.ndarray) -> np.ndarray:
    """A smooth HU ramp: linear interpolation of any grid reproduces it exactly."""
    x, y, z = world_lps[..., 0], world_lps[..., 1], world_lps[..., 2]
    return 40.0 + 3.0 * x - 2.0 * y + 4.0 * z


def cube_field(
    centre_lps: Sequence[float] = (6.0, -4.0, 9.0), half_size_mm: float = 4.0
) -> Callable[[np.ndarray], np.ndarray]:
    """Return a field of -1000 HU with a +1000 HU cube around `centre_lps`."""
    centre = np.asarray(centre_lps, dtype=np.float64)

    def values(world_lps: np.ndarray) -> np.ndarray:
        inside = np.all(np.abs(world_lps - centre) <= half_size_mm, axis=-1)
        return np.where(inside, 1000.0, -1000.0)

    return values


@dataclass
class SeriesSpec:
    """Geometry and encoding of one synthetic series.

    Slice k lies at `origin_lps + offsets_mm[k] * table_direction`, where `offsets_mm` is the
    cumulative sum of `steps_mm` (a number repeats it). `table_direction` defaults to the
    slice normal; an axial direction with a tilted orientation makes a gantry tilt.
    """

    rows: int = 24
    columns: int = 20
    slice_count: int = 10
    pixel_spacing_mm: tuple[float, float] = (0.9, 0.7)
    steps_mm: float | Sequence[float] = 1.5
    orientation: tuple[float, ...] = AXIAL
    origin_lps: tuple[float, float, float] = (-8.0, -11.0, 3.0)
    table_direction: tuple[float, float, float] | None = None
    modality: str = "CT"
    series_number: int = 2
    series_description: str = "PHANTOM AXIAL"
    image_type: tuple[str, ...] = ("ORIGINAL", "PRIMARY", "AXIAL")
    hu_field: Callable[[np.ndarray], np.ndarray] = linear_field
    encoding: str = "int16"  # "int16", or "uint16" (12 bits stored, intercept -1024)
    rescale_slope: float = 1.0
    rescale_intercept: float = -1024.0
    padding_value: int | None = None
    padded_corner: int = 0  # side of a padded square in the first corner, in pixels
    instance_order: str = "ascending"  # "ascending", "reversed" or "shuffled"
    sop_class_uid: str = CTImageStorage
    series_uid: str = field(default_factory=lambda: generate_uid(prefix=UID_ROOT))
    study_uid: str = "1.2.826.0.1.3680043.8.498.1234567890"

    def offsets_mm(self) -> np.ndarray:
        steps = (
            np.full(self.slice_count - 1, float(self.steps_mm))
            if np.isscalar(self.steps_mm)
            else np.asarray(self.steps_mm, dtype=np.float64)
        )
        return np.concatenate([[0.0], np.cumsum(steps)])

    def axes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        values = np.asarray(self.orientation, dtype=np.float64)
        row_cosine, column_cosine = values[:3], values[3:]
        return row_cosine, column_cosine, np.cross(row_cosine, column_cosine)

    def positions_lps(self) -> np.ndarray:
        _, _, normal = self.axes()
        direction = normal if self.table_direction is None else np.asarray(self.table_direction)
        return np.asarray(self.origin_lps) + self.offsets_mm()[:, None] * direction

    def pixel_world_lps(self, slice_index: int) -> np.ndarray:
        """Return the LPS position of every pixel of a slice, shape (rows, columns, 3)."""
        row_cosine, column_cosine, _ = self.axes()
        rows = np.arange(self.rows)[:, None, None] * self.pixel_spacing_mm[0] * column_cosine
        columns = np.arange(self.columns)[None, :, None] * self.pixel_spacing_mm[1] * row_cosine
        return self.positions_lps()[slice_index] + rows + columns

    def expected_hu(self, slice_index: int) -> np.ndarray:
        """Return the HU the pipeline should read for a slice (after stored rounding)."""
        stored = self.stored_values(slice_index)
        hu = stored.astype(np.float64) * self.rescale_slope + self.rescale_intercept
        if self.padding_value is not None and self.padded_corner:
            hu[: self.padded_corner, : self.padded_corner] = -1024.0
        return hu

    def stored_values(self, slice_index: int) -> np.ndarray:
        hu = self.hu_field(self.pixel_world_lps(slice_index))
        stored = np.rint((hu - self.rescale_intercept) / self.rescale_slope)
        if self.encoding == "uint16":
            stored = np.clip(stored, 0, 4095).astype(np.uint16)
        else:
            stored = np.clip(stored, -32768, 32767).astype(np.int16)
        if self.padding_value is not None and self.padded_corner:
            stored[: self.padded_corner, : self.padded_corner] = self.padding_value
        return stored


def build_series(spec: SeriesSpec) -> list[Dataset]:
    """Create the datasets of `spec`, in the slices' position order."""
    positions = spec.positions_lps()
    instance_numbers = list(range(1, spec.slice_count + 1))
    if spec.instance_order == "reversed":
        instance_numbers.reverse()
    elif spec.instance_order == "shuffled":
        np.random.default_rng(7).shuffle(instance_numbers)
    return [
        _slice_dataset(spec, k, positions[k], instance_numbers[k]) for k in range(spec.slice_count)
    ]


def _slice_dataset(
    spec: SeriesSpec, slice_index: int, position: np.ndarray, instance_number: int
) -> Dataset:
    ds = _base_dataset(spec.modality, spec.sop_class_uid)
    ds.StudyInstanceUID = spec.study_uid
    ds.SeriesInstanceUID = spec.series_uid
    ds.SeriesNumber = spec.series_number
    ds.SeriesDescription = spec.series_description
    ds.ImageType = list(spec.image_type)
    ds.InstanceNumber = instance_number
    ds.ImagePositionPatient = [f"{value:.6f}" for value in position]
    ds.ImageOrientationPatient = [f"{value:.7f}" for value in spec.orientation]
    ds.PixelSpacing = [f"{value:.6f}" for value in spec.pixel_spacing_mm]
    ds.SliceThickness = 1.0
    stored = spec.stored_values(slice_index)
    _set_pixels(ds, stored, bits_stored=12 if spec.encoding == "uint16" else 16)
    ds.RescaleSlope = f"{spec.rescale_slope:g}"
    ds.RescaleIntercept = f"{spec.rescale_intercept:g}"
    if spec.padding_value is not None:
        ds.PixelPaddingValue = spec.padding_value
    return ds


def _base_dataset(modality: str, sop_class_uid: str) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class_uid
    ds.SOPInstanceUID = generate_uid(prefix=UID_ROOT)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = sop_class_uid
    ds.Modality = modality
    ds.PatientName = PATIENT_NAME
    ds.PatientID = PATIENT_ID
    ds.PatientBirthDate = BIRTH_DATE
    ds.StudyDate = STUDY_DATE
    ds.SeriesDate = STUDY_DATE
    ds.AccessionNumber = ACCESSION_NUMBER
    ds.FrameOfReferenceUID = "1.2.826.0.1.3680043.8.498.4242"
    return ds


def _set_pixels(ds: Dataset, stored: np.ndarray, bits_stored: int) -> None:
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 1 if stored.dtype == np.int16 else 0
    ds.PixelData = stored.tobytes()


def enhanced_multiframe(spec: SeriesSpec) -> Dataset:
    """Put the slices of `spec` into one Enhanced CT object, with geometry in functional groups.

    Rescale and orientation sit in the shared groups, positions in the per-frame groups, and
    the frames are stored in reverse order of position.
    """
    ds = _base_dataset(spec.modality, "1.2.840.10008.5.1.4.1.1.2.1")
    ds.SeriesInstanceUID = spec.series_uid
    ds.SeriesNumber = spec.series_number
    ds.SeriesDescription = spec.series_description
    ds.ImageType = list(spec.image_type)
    ds.NumberOfFrames = spec.slice_count

    shared = Dataset()
    measures = Dataset()
    measures.PixelSpacing = [f"{value:.6f}" for value in spec.pixel_spacing_mm]
    measures.SliceThickness = 1.0
    orientation = Dataset()
    orientation.ImageOrientationPatient = [f"{value:.7f}" for value in spec.orientation]
    transformation = Dataset()
    transformation.RescaleSlope = f"{spec.rescale_slope:g}"
    transformation.RescaleIntercept = f"{spec.rescale_intercept:g}"
    transformation.RescaleType = "HU"
    shared.PixelMeasuresSequence = [measures]
    shared.PlaneOrientationSequence = [orientation]
    shared.PixelValueTransformationSequence = [transformation]
    ds.SharedFunctionalGroupsSequence = [shared]

    frame_order = list(reversed(range(spec.slice_count)))
    per_frame = []
    for k in frame_order:
        position = Dataset()
        position.ImagePositionPatient = [f"{value:.6f}" for value in spec.positions_lps()[k]]
        group = Dataset()
        group.PlanePositionSequence = [position]
        per_frame.append(group)
    ds.PerFrameFunctionalGroupsSequence = per_frame

    frames = np.stack([spec.stored_values(k) for k in frame_order])
    _set_pixels(ds, frames[0], bits_stored=12 if spec.encoding == "uint16" else 16)
    ds.PixelData = frames.tobytes()
    return ds


def jpeg_lossless_with_damaged_frames(spec: SeriesSpec) -> list[Dataset]:
    """Return the slices of `spec` labelled JPEG Lossless but holding bytes no codec decodes."""
    datasets = build_series(spec)
    for ds in datasets:
        ds.file_meta.TransferSyntaxUID = JPEGLosslessSV1
        ds.PixelData = encapsulate([b"\xff\xd8" + b"\x00" * 64])
        ds["PixelData"].VR = "OB"
    return datasets


def transcode(ds: Dataset, transfer_syntax: str) -> Dataset:
    """Re-encode a slice in place in a lossless transfer syntax and return it.

    Big endian data is byte-swapped here and deflated data is compressed by `dcmwrite`.
    RLE uses pydicom's own encoder and JPEG-LS the test-only pyjpegls plugin.
    """
    if transfer_syntax == ExplicitVRBigEndian:
        values = ds.pixel_array
        ds.PixelData = values.astype(values.dtype.newbyteorder(">")).tobytes()
    elif transfer_syntax == RLELossless:
        ds.compress(RLELossless, encoding_plugin="pydicom")
        return ds
    elif transfer_syntax == JPEGLSLossless:
        ds.compress(JPEGLSLossless, encoding_plugin="pyjpegls")
        return ds
    elif transfer_syntax != DeflatedExplicitVRLittleEndian:
        raise ValueError(f"no test encoder for transfer syntax {transfer_syntax}")
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    return ds


def encapsulate_frame(ds: Dataset, frame: bytes, transfer_syntax: str) -> Dataset:
    """Replace the pixel data of a slice with one compressed frame in `transfer_syntax`."""
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    ds.PixelData = encapsulate([frame])
    ds["PixelData"].VR = "OB"
    return ds


def jpeg_baseline(ds: Dataset, stored: np.ndarray, quality: int = 95) -> Dataset:
    """Store 8-bit `stored` values in a slice as lossy JPEG baseline, encoded by Pillow."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(stored.astype(np.uint8)).save(buffer, format="JPEG", quality=quality)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelRepresentation = 0
    ds.PhotometricInterpretation = "MONOCHROME2"
    return encapsulate_frame(ds, buffer.getvalue(), JPEGBaseline8Bit)


def structured_report() -> Dataset:
    """A Basic Text SR without pixel data, in its own series."""
    ds = _base_dataset("SR", "1.2.840.10008.5.1.4.1.1.88.11")
    ds.SeriesInstanceUID = generate_uid(prefix=UID_ROOT)
    ds.SeriesNumber = 900
    ds.SeriesDescription = "Report"
    return ds


def secondary_capture() -> Dataset:
    """A screenshot-like secondary capture with no geometry."""
    ds = _base_dataset("CT", SecondaryCaptureImageStorage)
    ds.SeriesInstanceUID = generate_uid(prefix=UID_ROOT)
    ds.SeriesNumber = 800
    ds.SeriesDescription = "Dose summary"
    ds.ImageType = ["DERIVED", "SECONDARY"]
    _set_pixels(ds, np.zeros((16, 16), dtype=np.int16), bits_stored=16)
    return ds


def localizer(spec: SeriesSpec | None = None) -> list[Dataset]:
    """A one-slice localizer series."""
    spec = replace(
        spec or SeriesSpec(),
        slice_count=1,
        series_number=1,
        series_description="Scout",
        image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"),
        series_uid=generate_uid(prefix=UID_ROOT),
    )
    return build_series(spec)


def mr_spec(**changes: object) -> SeriesSpec:
    """An MR series spec: no rescale to HU, unsigned values."""
    values = {
        "modality": "MR",
        "sop_class_uid": MRImageStorage,
        "rescale_intercept": 0.0,
        "encoding": "uint16",
        "hu_field": lambda world: 500.0 + 2.0 * world[..., 0] + world[..., 1] - world[..., 2],
        "series_description": "T1 PHANTOM",
    }
    values.update(changes)
    return SeriesSpec(**values)  # type: ignore[arg-type]


def dicom_bytes(ds: Dataset, *, preamble: bool = True) -> bytes:
    """Encode a dataset as a Part 10 file, or as a bare implicit VR data set without preamble."""
    buffer = io.BytesIO()
    if preamble:
        ds.preamble = b"\0" * 128
        pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    else:
        bare = Dataset()
        bare.update(ds)
        pydicom.dcmwrite(buffer, bare, implicit_vr=True, little_endian=True)
    return buffer.getvalue()


def write_series_folder(datasets: Sequence[Dataset], folder: Path) -> Path:
    """Write datasets as numbered Part 10 files (for dcm2niix)."""
    folder.mkdir(parents=True, exist_ok=True)
    for number, ds in enumerate(datasets):
        (folder / f"slice{number:03d}.dcm").write_bytes(dicom_bytes(ds))
    return folder


@dataclass
class ZipMember:
    """One member to put in a test ZIP; `info` overrides the generated ZipInfo."""

    name: str
    data: bytes
    info: zipfile.ZipInfo | None = None
    compress: bool = True


def write_zip(path: Path, members: Sequence[ZipMember]) -> Path:
    """Write a ZIP of `members` in the given order, deflated unless `compress` is false."""
    with zipfile.ZipFile(path, "w") as archive:
        for member in members:
            info = member.info or zipfile.ZipInfo(member.name, date_time=(2020, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED if member.compress else zipfile.ZIP_STORED
            archive.writestr(info, member.data)
    return path


def series_members(
    datasets: Sequence[Dataset],
    folder: str = "SILVA^MARIA/SERIES",
    *,
    suffix: str = ".dcm",
    preamble: bool = True,
) -> list[ZipMember]:
    """Return ZIP members for datasets, named like a clinic export (patient name in the path)."""
    return [
        ZipMember(f"{folder}/IM{number:04d}{suffix}", dicom_bytes(ds, preamble=preamble))
        for number, ds in enumerate(datasets)
    ]
