"""Time the worker's own steps on a study ZIP, on one core: convert and write results.

Run from the repository root: ``python -m bench.worker_steps STUDY.zip``. The inference
step is the provider's time and is not measured here (see ``bench.segmenter_speed`` for
the reference segmenter). The script converts the study to the 512 x 512 x 64 grid sent to
inference, then writes a mask of that shape as NIfTI, as the results step does.
"""

import os

# Pin BLAS and OpenMP pools to one thread before numpy loads.
for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(variable, "1")

import argparse  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402

from portal.pipeline import convert_study, write_mask_nifti  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study_zip", type=Path, help="ZIP of a DICOM study")
    parser.add_argument("--repeats", type=int, default=3, help="runs per measurement")
    arguments = parser.parse_args()

    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    convert_s, results_s = [], []
    for _ in range(arguments.repeats):
        with tempfile.TemporaryDirectory(prefix="bench-") as work:
            work_dir = Path(work)
            started = time.perf_counter()
            result = convert_study(arguments.study_zip, work_dir / "out")
            convert_s.append(time.perf_counter() - started)

            affine_ras = nib.load(result.image_path).affine
            with np.load(result.npz_path, allow_pickle=False) as npz:
                shape_zyx = npz["image"].shape
            mask_zyx = np.zeros(shape_zyx, dtype=np.uint8)
            mask_zyx[:, 100:400, 100:400] = 1
            started = time.perf_counter()
            write_mask_nifti(mask_zyx, affine_ras, work_dir / "mask.nii.gz")
            results_s.append(time.perf_counter() - started)

    print(
        f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}"
    )
    print(f"study: {arguments.study_zip.name}, median of {arguments.repeats} runs, one core")
    print(f"convert: {statistics.median(convert_s):.2f} s")
    print(f"results: {statistics.median(results_s):.2f} s")


if __name__ == "__main__":
    main()
