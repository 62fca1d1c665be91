"""Time the reference segmenter on a 512 x 512 x 64 chest phantom, on one core.

Run from the repository root: ``python -m bench.segmenter_speed``. Wall time depends on
the machine, so the script also times a plain numpy pass over the same array (a threshold
and a count) and reports the ratio between the two, which varies less between machines.
The brief for the segmenter sets a budget of 5 s for this volume on one core.
"""

import os

# Pin BLAS and OpenMP pools to one thread before numpy loads; scipy.ndimage is
# single-threaded already.
for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(variable, "1")

import argparse  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from segmenter.catalogue import load_label_values  # noqa: E402
from segmenter.ct import segment_ct  # noqa: E402
from tests.segmenter.phantoms import make_chest_phantom  # noqa: E402

BUDGET_S = 5.0


def time_call(function, repeats: int) -> float:
    """Return the median wall time of ``function()`` in seconds."""
    durations = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        durations.append(time.perf_counter() - started)
    return statistics.median(durations)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs per measurement")
    arguments = parser.parse_args()

    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    phantom = make_chest_phantom((64, 512, 512), (2.5, 0.7, 0.7))
    label_values = load_label_values()

    reference_s = time_call(lambda: int(np.count_nonzero(phantom.image > 0.5)), arguments.repeats)
    segment_s = time_call(
        lambda: segment_ct(phantom.image, phantom.spacing_mm, label_values), arguments.repeats
    )

    print(
        f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}"
    )
    print(f"volume: {phantom.image.shape} float32, median of {arguments.repeats} runs, one core")
    print(f"numpy threshold pass: {reference_s:.3f} s")
    print(f"segment_ct:           {segment_s:.3f} s")
    print(f"ratio:                {segment_s / reference_s:.0f} x the numpy pass")
    print(f"within the {BUDGET_S:.0f} s budget: {'yes' if segment_s < BUDGET_S else 'NO'}")


if __name__ == "__main__":
    main()
