"""Patient identifiers never appear in clear outside their encrypted columns.

A study whose DICOM headers, ZIP member paths and file name carry unique sentinel strings
runs to the end on the real processes, on SQLite and on PostgreSQL. The test then
searches for the sentinels, in common encodings, in the database dump, every log file,
every object key and body in storage (gzip bodies also inflated), the inference NPZ and
every request the inference API received. A second test reads every file under the data
folder after raw retention.
"""

from __future__ import annotations

import base64
import gzip
import io
import sqlite3
import subprocess
import time
import urllib.parse
import zipfile
from pathlib import Path

import numpy as np
import pytest
import requests

from scripts.devstack import run_flask
from tests.pipeline.phantoms import SeriesSpec, build_series, series_members
from tests.support.recording_proxy import RecordingProxy
from tests.support.servers import free_port
from tests.support.stack import running_stack

pytestmark = pytest.mark.e2e

PATIENT_NAME = "ZQXNOME^ZQXSENTINELA^ZQXKAPPA"
PATIENT_ID = "ZQXPID-7731"
BIRTH_DATE = "19230917"
ACCESSION_NUMBER = "ZQXACC-4402"
FILE_NAME = "ZQXARQUIVO-exame.zip"

#: Each sentinel with the other forms software writes it in.
SEARCH_TERMS = {
    "patient name": [PATIENT_NAME, *PATIENT_NAME.split("^"), "ZQXNOME, ZQXSENTINELA"],
    "patient ID": [PATIENT_ID],
    "birth date": [BIRTH_DATE, "1923-09-17", "17/09/1923", "09/17/1923"],
    "accession number": [ACCESSION_NUMBER],
    "file name": [FILE_NAME, "ZQXARQUIVO"],
}
#: Only these NPZ arrays may reach the inference API.
NPZ_KEYS = {"image", "spacing_mm", "modality", "categories"}


def encodings(term: str) -> set[bytes]:
    """Return byte patterns of `term` as UTF-8, UTF-16, hex, base64 and URL encoding."""
    forms = {term, term.lower(), term.upper()}
    patterns = set()
    for form in forms:
        raw = form.encode()
        patterns |= {
            raw,
            form.encode("utf-16-le"),
            form.encode("utf-16-be"),
            raw.hex().encode(),
            raw.hex().upper().encode(),
            urllib.parse.quote(form).encode(),
            urllib.parse.quote_plus(form).encode(),
        }
        # base64 of the term at each of the three alignments inside a longer text: the
        # first and last groups mix in neighbouring bytes, so only the middle is compared.
        for offset in range(3):
            encoded = base64.b64encode(b"\0" * offset + raw)
            middle = encoded[4 if offset else 0 : -4]
            if len(middle) >= 8:
                patterns.add(middle)
                patterns.add(middle.replace(b"+", b"-").replace(b"/", b"_"))
    return patterns


PATTERNS = {
    (label, term, pattern)
    for label, terms in SEARCH_TERMS.items()
    for term in terms
    for pattern in encodings(term)
}


def find_sentinels(where: str, data: bytes) -> list[str]:
    """Return a description of every sentinel pattern found in `data`."""
    return [
        f"{label} ({term!r} as {pattern[:40]!r}) in {where}"
        for label, term, pattern in PATTERNS
        if pattern in data
    ]


def sentinel_study_zip() -> bytes:
    datasets = build_series(SeriesSpec(slice_count=6))
    for dataset in datasets:
        dataset.PatientName = PATIENT_NAME
        dataset.PatientID = PATIENT_ID
        dataset.PatientBirthDate = BIRTH_DATE
        dataset.AccessionNumber = ACCESSION_NUMBER
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for member in series_members(datasets, f"{PATIENT_NAME}/{PATIENT_ID}/{BIRTH_DATE}"):
            archive.writestr(member.name, member.data)
    return buffer.getvalue()


def wait_until_finished(base_url: str, study_id: str, headers: dict, timeout_s: float = 180):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = requests.get(
            f"{base_url}/api/studies/{study_id}/status/", headers=headers, timeout=10
        ).json()
        if status["status"] in ("succeeded", "failed", "cancelled"):
            return status
        time.sleep(0.5)
    raise AssertionError(f"study {study_id} did not finish in {timeout_s} s")


def upload_sentinel_study(env) -> tuple[str, dict]:
    """Upload the sentinel study with a new clinic's API key; return its id and headers."""
    clinic = run_flask(env, "clinics", "create", "Clínica Sentinela", "--seats", "2")
    key = run_flask(env, "api-keys", "create", "--clinic", clinic, "--name", "RIS")
    headers = {"Authorization": f"Bearer {key}"}
    created = requests.post(
        f"{env['PORTAL_BASE_URL']}/api/studies/",
        headers=headers,
        files={"file": (FILE_NAME, sentinel_study_zip(), "application/zip")},
        data={"categories": ["lung", "bone"]},
        timeout=60,
    )
    assert created.status_code == 202, created.text
    return created.json()["id"], headers


def storage_objects(env, work_dir: Path) -> dict[str, bytes]:
    """Return every object of the stack's bucket by key."""
    from portal.config import Settings
    from portal.storage import Storage

    storage = Storage(Settings.from_env(env))
    work_dir.mkdir(parents=True, exist_ok=True)
    objects = {}
    for number, key in enumerate(storage.list_keys("clinics")):
        objects[key] = storage.download_file(key, work_dir / f"object-{number}").read_bytes()
    return objects


def inflated(body: bytes) -> bytes:
    """Return the body with its gzip stream inflated when it is one (NIfTI .nii.gz)."""
    if body[:2] == b"\x1f\x8b":
        return body + gzip.decompress(body)
    return body


IDENTIFIER_COLUMNS_SQL = (
    "SELECT patient_name_enc, patient_id_enc, birth_date_enc, accession_number_enc,"
    " upload_file_name_enc, patient_id_hash FROM study"
)


def database_dump(env) -> bytes:
    """Dump every table: SQLite's iterdump, or pg_dump as the tables' owner.

    Both write binary columns as hex, which `encodings` covers.
    """
    if env["DATABASE_URL"].startswith("sqlite"):
        connection = sqlite3.connect(sqlite_path(env))
        try:
            return "\n".join(connection.iterdump()).encode()
        finally:
            connection.close()
    return subprocess.run(
        ["pg_dump", "--data-only", "--inserts", libpq_url(env)],
        capture_output=True,
        check=True,
    ).stdout


def identifier_columns(env) -> tuple:
    """Return the encrypted identifier columns and the search hash of the only study."""
    if env["DATABASE_URL"].startswith("sqlite"):
        connection = sqlite3.connect(sqlite_path(env))
        try:
            return connection.execute(IDENTIFIER_COLUMNS_SQL).fetchone()
        finally:
            connection.close()
    import psycopg

    # The owner is a superuser, so row-level security does not hide the row.
    with psycopg.connect(libpq_url(env)) as connection:
        return connection.execute(IDENTIFIER_COLUMNS_SQL).fetchone()


def sqlite_path(env) -> str:
    return env["DATABASE_URL"].removeprefix("sqlite:///")


def libpq_url(env) -> str:
    return env["DATABASE_MIGRATION_URL"].replace("postgresql+psycopg://", "postgresql://")


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_sentinels_only_in_encrypted_columns(tmp_path, backend):
    segmenter_port = free_port()
    proxy = RecordingProxy(f"http://127.0.0.1:{segmenter_port}")
    proxy.start()
    try:
        with running_stack(
            tmp_path,
            backend=backend,
            SEGMENTER_PORT=segmenter_port,
            INFERENCE_API_URL=proxy.base_url,
            DICOM_TARGET_HW="(32, 32)",
            DICOM_TARGET_SLICES=8,
        ) as stack:
            env = stack.env
            base_url = env["PORTAL_BASE_URL"]
            study_id, headers = upload_sentinel_study(env)
            final = wait_until_finished(base_url, study_id, headers)
            assert final["status"] == "succeeded", final

            # The clinic's API key reads the identifiers back: they are stored, encrypted.
            study = requests.get(
                f"{base_url}/api/studies/{study_id}/", headers=headers, timeout=10
            ).json()
            assert study["patient"] == {
                "patient_name": PATIENT_NAME,
                "patient_id": PATIENT_ID,
                "birth_date": BIRTH_DATE,
                "accession_number": ACCESSION_NUMBER,
                "file_name": FILE_NAME,
            }
            found = requests.get(f"{base_url}/api/studies/{study_id}/", headers=headers, timeout=10)
            assert found.status_code == 200
            objects_before_retention = storage_objects(env, tmp_path / "objects")
            # The temporary PostgreSQL database is dropped with the stack, so dump it now.
            dump = database_dump(env)
            row = identifier_columns(env)
        log_files = sorted(path for path in stack.log_dir.rglob("*") if path.is_file())

        findings = []

        # The database: every value in clear, and the encrypted columns filled.
        assert study_id.encode() in dump, "the dump does not contain the study row"
        findings += find_sentinels("the database dump", dump)
        assert all(value is not None for value in row), "an identifier column is empty"

        # Every log line of every process.
        assert {path.name for path in log_files} >= {"web.log", "worker.log", "segmenter.log"}
        for path in log_files:
            findings += find_sentinels(f"log {path.name}", path.read_bytes())

        # Object keys and bodies. The raw upload is the patient's own DICOM, so its body
        # contains the identifiers by nature. The second test checks storage after
        # retention has deleted it.
        npz_keys = [key for key in objects_before_retention if key.endswith("/volume.npz")]
        assert len(npz_keys) == 1
        for object_key, body in objects_before_retention.items():
            findings += find_sentinels("an object key", object_key.encode())
            if object_key.endswith("/upload.zip"):
                # The search must find what is there: the raw upload contains every
                # sentinel except the file name, which only the multipart header carried.
                found_in_upload = {label for label, _term, pattern in PATTERNS if pattern in body}
                assert found_in_upload == set(SEARCH_TERMS) - {"file name"}
                continue
            findings += find_sentinels(f"object {object_key}", inflated(body))
        with np.load(io.BytesIO(objects_before_retention[npz_keys[0]]), allow_pickle=False) as npz:
            assert set(npz.files) == NPZ_KEYS

        # Every request the inference API received.
        submits = [request for request in proxy.requests if request.method == "POST"]
        assert len(submits) == 1
        for request in proxy.requests:
            findings += find_sentinels(
                f"inference {request.method} {request.path}", request.path.encode()
            )
            findings += find_sentinels("inference request headers", repr(request.headers).encode())
            findings += find_sentinels("an inference request body", request.body)

        assert findings == [], "\n".join(sorted(findings))
    finally:
        proxy.stop()


def test_no_trace_on_disk_after_raw_retention(tmp_path):
    """Read every file under DATA_DIR after raw retention: no sentinel may remain in clear.

    The database file is read too, because its identifiers are encrypted.
    """
    with running_stack(tmp_path, DICOM_TARGET_HW="(32, 32)", DICOM_TARGET_SLICES=8) as stack:
        env = stack.env
        base_url = env["PORTAL_BASE_URL"]
        study_id, headers = upload_sentinel_study(env)
        assert wait_until_finished(base_url, study_id, headers)["status"] == "succeeded"
        output = run_flask(env | {"RAW_RETENTION_HOURS": "0"}, "retention")
        assert output.splitlines()[0] == "raw_data\t1"
        keys = storage_objects(env, tmp_path / "objects")
        assert not any(key.endswith(("/upload.zip", "/volume.npz")) for key in keys)
    findings = []
    for path in sorted(Path(env["DATA_DIR"]).rglob("*")):
        if path.is_file():
            findings += find_sentinels(f"file {path.name}", path.read_bytes())
    for path in sorted(stack.log_dir.rglob("*")):
        if path.is_file():
            findings += find_sentinels(f"log {path.name}", path.read_bytes())
    assert findings == [], "\n".join(sorted(findings))
