"""Fixtures for pipeline tests: ZIP factories over synthetic series, and the real studies."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from tests.pipeline.archives import close_opened_archives
from tests.pipeline.phantoms import ZipMember, write_zip

CHEST_ZIP = "ct_chest_3slice_with_reference_segmentations.zip"
PHILIPS_ZIP = "ct_philips_phantom_study_localizer_2tilted_axial_summary.zip"
MR_ZIP = "mr_t1_3d_jpeg_lossless_and_j2k_fragmented.zip"


@pytest.fixture(autouse=True)
def _close_archives():
    """Close the archives a test opened with `open_archive`."""
    yield
    close_opened_archives()


@pytest.fixture
def make_zip(tmp_path: Path) -> Callable[..., Path]:
    """Return a factory that writes a ZIP of members into the test's folder."""
    counter = iter(range(1_000_000))

    def make(members: Sequence[ZipMember], name: str | None = None) -> Path:
        return write_zip(tmp_path / (name or f"study{next(counter)}.zip"), members)

    return make


@pytest.fixture
def work_dir(tmp_path: Path) -> Path:
    """Return an empty output folder for one conversion."""
    path = tmp_path / "work"
    path.mkdir()
    return path


def _real_study(shared_dicom_dir: Path, name: str) -> Path:
    path = shared_dicom_dir / name
    if not path.is_file():
        pytest.skip(f"real study {name} not found in {shared_dicom_dir}")
    return path


@pytest.fixture(scope="session")
def chest_zip(shared_dicom_dir: Path) -> Path:
    """GE chest CT, 3 axial slices, InstanceNumber opposite to z, with reference masks."""
    return _real_study(shared_dicom_dir, CHEST_ZIP)


@pytest.fixture(scope="session")
def philips_zip(shared_dicom_dir: Path) -> Path:
    """Philips CT: localizer, two gantry-tilted axial series, secondary captures, DIRFILEs."""
    return _real_study(shared_dicom_dir, PHILIPS_ZIP)


@pytest.fixture(scope="session")
def mr_zip(shared_dicom_dir: Path) -> Path:
    """Siemens MR T1, one series JPEG Lossless (5001), one JPEG 2000 (6001)."""
    return _real_study(shared_dicom_dir, MR_ZIP)


@pytest.fixture(scope="session")
def reference_dir(shared_dicom_dir: Path) -> Path:
    """Return the folder of dcm2niix outputs and reference masks."""
    return shared_dicom_dir / "reference"
