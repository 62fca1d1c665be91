"""DICOM study conversion for the segmenter, in pure code (no web, database or S3 imports).

Typical use::

    from portal.pipeline import convert_study
    result = convert_study(zip_path, work_dir)
"""

from .archive import ArchiveContents, ArchiveLimits, ArchiveMember, read_archive
from .convert import ConversionResult, convert_study, inspect_study
from .errors import (
    ERROR_CODES,
    ArchiveInvalid,
    ArchiveTooLarge,
    ArchiveUnsafe,
    InconsistentGeometry,
    MultiplePatients,
    NoDicomFound,
    NoUsableSeries,
    PipelineError,
    PixelDecodeFailed,
    SeriesNotFound,
    SeriesNotUsable,
    SliceGap,
    UnsupportedModality,
    UnsupportedTransferSyntax,
)
from .identifiers import PatientIdentifiers, read_identifiers
from .nifti import (
    NativeNiftiWriter,
    ras_affine_from_lps,
    write_image_nifti,
    write_mask_nifti,
    write_native_mask,
    write_native_nifti,
)
from .npz import write_inference_npz
from .report import WARNING_TEXTS, PipelineWarning
from .resample import (
    average_slabs,
    resample_to_shape,
    target_affine,
    window_ct,
    window_volume,
)
from .series import REASON_TEXTS, SeriesCandidate, StudyIndex, choose_series, discover_series
from .volume import Volume, load_volume

__all__ = [
    "ERROR_CODES",
    "REASON_TEXTS",
    "WARNING_TEXTS",
    "ArchiveContents",
    "ArchiveInvalid",
    "ArchiveLimits",
    "ArchiveMember",
    "ArchiveTooLarge",
    "ArchiveUnsafe",
    "ConversionResult",
    "InconsistentGeometry",
    "MultiplePatients",
    "NativeNiftiWriter",
    "NoDicomFound",
    "NoUsableSeries",
    "PatientIdentifiers",
    "PipelineError",
    "PipelineWarning",
    "PixelDecodeFailed",
    "SeriesCandidate",
    "SeriesNotFound",
    "SeriesNotUsable",
    "SliceGap",
    "StudyIndex",
    "UnsupportedModality",
    "UnsupportedTransferSyntax",
    "Volume",
    "average_slabs",
    "choose_series",
    "convert_study",
    "discover_series",
    "inspect_study",
    "load_volume",
    "ras_affine_from_lps",
    "read_archive",
    "read_identifiers",
    "resample_to_shape",
    "target_affine",
    "window_ct",
    "window_volume",
    "write_image_nifti",
    "write_inference_npz",
    "write_mask_nifti",
    "write_native_mask",
    "write_native_nifti",
]
