"""The command line, run as a subprocess: convert, inspect, errors, and no web imports."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

from tests.pipeline.phantoms import SeriesSpec, build_series, localizer, series_members

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PIPELINE_DIR = PROJECT_ROOT / "portal" / "pipeline"
FORBIDDEN_PACKAGES = ("flask", "flask_sqlalchemy", "sqlalchemy", "boto3", "botocore")


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_inspect_prints_report_json(make_zip):
    zip_path = make_zip(
        series_members(localizer(), "L") + series_members(build_series(SeriesSpec()))
    )

    completed = _run("-m", "portal.pipeline", "inspect", str(zip_path))

    assert completed.returncode == 0, completed.stderr
    report = json.loads(completed.stdout)
    assert [s["reason_code"] for s in report["series"]] == ["localizer", "chosen_most_slices"]


def test_convert_writes_outputs(make_zip, tmp_path):
    zip_path = make_zip(series_members(build_series(SeriesSpec())))
    out = tmp_path / "out"

    completed = _run(
        "-m", "portal.pipeline", "convert", str(zip_path), "--out", str(out),
        "--target-slices", "8", "--target-hw", "32", "32",
    )  # fmt: skip

    assert completed.returncode == 0, completed.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "image.nii.gz",
        "native.nii.gz",
        "report.json",
        "volume.npz",
    ]
    report = json.loads((out / "report.json").read_text())
    assert report["output"]["shape_zyx"] == [8, 32, 32]


def test_convert_with_forced_series_id(make_zip, tmp_path):
    members = series_members(build_series(SeriesSpec(slice_count=4, series_number=7)), "A")
    members += series_members(build_series(SeriesSpec(slice_count=8, series_number=8)), "B")
    zip_path = make_zip(members)
    report = json.loads(_run("-m", "portal.pipeline", "inspect", str(zip_path)).stdout)
    small_id = next(s["series_id"] for s in report["series"] if s["series_number"] == 7)

    completed = _run(
        "-m", "portal.pipeline", "convert", str(zip_path), "--out", str(tmp_path / "out"),
        "--series-id", small_id, "--target-slices", "4", "--target-hw", "16", "16",
    )  # fmt: skip

    assert completed.returncode == 0, completed.stderr
    converted = json.loads((tmp_path / "out" / "report.json").read_text())
    assert converted["chosen_series_id"] == small_id


def test_inspect_reports_error_and_exits_0(tmp_path):
    not_a_zip = tmp_path / "study.zip"
    not_a_zip.write_text("not a zip")

    completed = _run("-m", "portal.pipeline", "inspect", str(not_a_zip))

    assert completed.returncode == 0, completed.stderr
    report = json.loads(completed.stdout)
    assert report["series"] == []
    assert report["warnings"] == []
    assert report["error"]["code"] == "archive_invalid"
    assert "ZIP" in report["error"]["message"]


def test_convert_error_exits_2_with_one_line(tmp_path):
    not_a_zip = tmp_path / "study.zip"
    not_a_zip.write_text("not a zip")

    completed = _run(
        "-m", "portal.pipeline", "convert", str(not_a_zip), "--out", str(tmp_path / "o")
    )

    assert completed.returncode == 2
    assert completed.stdout == ""
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: archive_invalid: ")


def test_unknown_series_id_exits_2(make_zip, tmp_path):
    zip_path = make_zip(series_members(build_series(SeriesSpec(slice_count=3))))

    completed = _run(
        "-m", "portal.pipeline", "convert", str(zip_path), "--out", str(tmp_path / "o"),
        "--series-id", "ffffffffffff",
    )  # fmt: skip

    assert completed.returncode == 2
    assert completed.stderr.startswith("error: series_not_found: ")


def test_cli_imports_no_web_database_or_s3_package(make_zip):
    zip_path = make_zip(series_members(build_series(SeriesSpec(slice_count=3))))

    completed = _run("-X", "importtime", "-m", "portal.pipeline", "inspect", str(zip_path))

    assert completed.returncode == 0, completed.stderr
    imported = {
        line.split("|")[-1].strip().split(".")[0]
        for line in completed.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    assert "pydicom" in imported  # the parse of -X importtime output works
    assert not imported & set(FORBIDDEN_PACKAGES)


def test_importing_pipeline_loads_no_web_package():
    code = (
        "import sys, portal.pipeline; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & set(sys.argv[1:])))"
    )

    completed = _run("-c", code, *FORBIDDEN_PACKAGES)

    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "[]"


def test_pipeline_source_names_no_forbidden_import():
    for path in PIPELINE_DIR.rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert name.split(".")[0] not in FORBIDDEN_PACKAGES, f"{path.name} imports {name}"


def test_portal_package_init_is_empty():
    assert (PROJECT_ROOT / "portal" / "__init__.py").read_text().strip() == ""
