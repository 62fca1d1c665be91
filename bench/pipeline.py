"""Benchmark `python -m portal.pipeline convert` against `unzip` + `dcm2niix -z y`.

Builds realistic CT ZIPs (512 x 512 int16 slices of a smooth body phantom with noise,
deflated like a PACS export) of 140, 300 and 600 slices uncompressed and 140 slices in
JPEG 2000, then times each tool as a whole process on the same ZIP, in the same run, and
prints wall time, peak RSS (of the process and its children) and the ratio to dcm2niix.

Run from the repository root:

    python bench/pipeline.py [--sizes 140 300 600] [--repeat 3] [--no-j2k]

dcm2niix is the PyPI package's binary next to this Python; it calls `pigz` for `-z y`
when pigz is on PATH (Debian: `apt-get install pigz`).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, JPEG2000Lossless, generate_uid

ROWS = COLUMNS = 512
SPACING_MM = 0.7
STEP_MM = 1.0


def phantom_slice(k: int, rng: np.random.Generator) -> np.ndarray:
    """Return stored values of one slice: an elliptic body of soft tissue with noise, in air."""
    y, x = np.mgrid[0:ROWS, 0:COLUMNS]
    body = ((x - 256) / 200.0) ** 2 + ((y - 256) / 150.0) ** 2 <= 1.0
    hu = np.where(body, 40.0 + 10.0 * np.sin(k / 9.0), -1000.0)
    hu += rng.normal(0.0, 12.0, hu.shape)
    return np.clip(np.rint(hu + 1024.0), 0, 4095).astype(np.uint16)


def build_zip(path: Path, slice_count: int, *, j2k: bool) -> Path:
    """Write a one-series CT study ZIP of `slice_count` slices."""
    rng = np.random.default_rng(slice_count)
    series_uid, study_uid = generate_uid(), generate_uid()
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as archive:
        for k in range(slice_count):
            ds = Dataset()
            ds.file_meta = FileMetaDataset()
            ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
            ds.SOPInstanceUID = generate_uid()
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds.SOPClassUID = CTImageStorage
            ds.Modality = "CT"
            ds.PatientName, ds.PatientID = "BENCH^PHANTOM", "BENCH1"
            ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
            ds.SeriesNumber, ds.InstanceNumber = 2, k + 1
            ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
            ds.ImagePositionPatient = [-179.0, -179.0, k * STEP_MM]
            ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
            ds.PixelSpacing = [SPACING_MM, SPACING_MM]
            ds.SliceThickness = STEP_MM
            ds.Rows, ds.Columns = ROWS, COLUMNS
            ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
            ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
            ds.PixelData = phantom_slice(k, rng).tobytes()
            if j2k:
                ds.compress(JPEG2000Lossless, encoding_plugin="pylibjpeg")
            buffer = pydicom.filebase.DicomBytesIO()
            pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
            archive.writestr(f"BENCH/SERIES2/IM{k:05d}", buffer.getvalue())
    return path


def timed(command: list[str], cwd: Path | None = None) -> tuple[float, float]:
    """Run `command` in a shell-free child and return (wall seconds, peak RSS MiB of children)."""
    script = (
        "import resource, subprocess, sys, time;"
        "t = time.perf_counter();"
        "r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE);"
        "w = time.perf_counter() - t;"
        "assert r.returncode == 0, r.stderr.decode()[-2000:];"
        "print(w, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)"
    )
    output = subprocess.run(
        [sys.executable, "-c", script, *command],
        capture_output=True,
        text=True,
        cwd=cwd,
        check=True,
    )
    wall, rss = output.stdout.split()
    return float(wall), float(rss)


def time_portal(zip_path: Path, work: Path) -> tuple[float, float]:
    out = work / "portal-out"
    shutil.rmtree(out, ignore_errors=True)
    return timed(
        [sys.executable, "-m", "portal.pipeline", "convert", str(zip_path), "--out", str(out)]
    )


def time_dcm2niix(zip_path: Path, work: Path, dcm2niix: str) -> tuple[float, float]:
    folder = work / "dcm2niix"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    # unzip and dcm2niix run as one shell pipeline so both count in one wall time.
    command = (
        f"unzip -q {zip_path} -d {folder}/in && mkdir {folder}/out && "
        f"{dcm2niix} -z y -o {folder}/out {folder}/in"
    )
    return timed(["/bin/sh", "-c", command])


def _load_average() -> str:
    """Return the 1, 5 and 15 minute load averages: the machine may be shared."""
    return " / ".join(f"{value:.1f}" for value in os.getloadavg())


def best_of(repeat: int, run) -> tuple[float, float]:
    results = [run() for _ in range(repeat)]
    return min(r[0] for r in results), max(r[1] for r in results)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[140, 300, 600])
    parser.add_argument("--repeat", type=int, default=3, help="runs per tool; the fastest counts")
    parser.add_argument("--no-j2k", action="store_true", help="skip the JPEG 2000 case")
    args = parser.parse_args()

    dcm2niix = str(Path(sys.executable).with_name("dcm2niix"))
    print(
        f"# {platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"
    )
    pigz = shutil.which("pigz")
    print(f"# {time.strftime('%Y-%m-%d')}, Python {platform.python_version()}, pigz: {pigz}")
    version = subprocess.run([dcm2niix, "-v"], capture_output=True, text=True, check=False).stdout
    print(f"# dcm2niix: {version.strip().splitlines()[-1] if version.strip() else 'unknown'}")
    cases = [(size, False) for size in args.sizes]
    if not args.no_j2k:
        cases.append((140, True))
    print(f"# load average at start: {_load_average()}")
    print(
        "| slices | encoding | portal s | portal MiB | dcm2niix s | dcm2niix MiB | ratio "
        "| load after |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        work = Path(tmp)
        for size, j2k in cases:
            zip_path = build_zip(work / f"ct{size}{'-j2k' if j2k else ''}.zip", size, j2k=j2k)
            portal = best_of(args.repeat, lambda path=zip_path: time_portal(path, work))
            reference = best_of(
                args.repeat, lambda path=zip_path: time_dcm2niix(path, work, dcm2niix)
            )
            encoding = "JPEG 2000" if j2k else "uncompressed"
            print(
                f"| {size} | {encoding} | {portal[0]:.2f} | {portal[1]:.0f} | "
                f"{reference[0]:.2f} | {reference[1]:.0f} | {portal[0] / reference[0]:.2f} | "
                f"{_load_average()} |",
                flush=True,
            )
            zip_path.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
