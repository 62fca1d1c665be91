"""The main job through the JSON API, on the real processes."""

from __future__ import annotations

import gzip
import io
import time
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import nibabel as nib
import numpy as np
import pytest
import requests

from scripts.devstack import run_flask
from tests.support.stack import running_stack

pytestmark = pytest.mark.e2e

CHEST_ZIP = "ct_chest_3slice_with_reference_segmentations.zip"
PRESIGNED_TTL_S = 4


def wait_for_terminal_status(base_url, study_id, headers, *, timeout_s=240):
    deadline = time.monotonic() + timeout_s
    seen = []
    while time.monotonic() < deadline:
        body = requests.get(
            f"{base_url}/api/studies/{study_id}/status/", headers=headers, timeout=10
        ).json()
        if not seen or seen[-1] != body["status"]:
            seen.append(body["status"])
        if body["status"] in ("succeeded", "failed", "cancelled"):
            return body, seen
        time.sleep(0.5)
    raise AssertionError(f"study {study_id} still not finished after {timeout_s} s: {seen}")


def load_nifti(data: bytes):
    return nib.Nifti1Image.from_bytes(gzip.decompress(data))


def with_query(url: str, **changes) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query.update(changes)
    return urlunsplit(parts._replace(query=urlencode(query)))


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_api_upload_to_result(tmp_path, shared_dicom_dir, backend):
    with running_stack(
        tmp_path,
        backend=backend,
        PRESIGNED_URL_TTL=PRESIGNED_TTL_S,
        MAX_UPLOAD_BYTES=8 * 1024 * 1024,
    ) as stack:
        env = stack.env
        base_url = env["PORTAL_BASE_URL"]
        clinic_a = run_flask(env, "clinics", "create", "Clínica A", "--seats", "3")
        clinic_b = run_flask(env, "clinics", "create", "Clínica B", "--seats", "3")
        key_a = run_flask(env, "api-keys", "create", "--clinic", clinic_a, "--name", "RIS")
        key_b = run_flask(env, "api-keys", "create", "--clinic", clinic_b, "--name", "RIS")
        assert key_a.startswith("vzm_") and "\n" not in key_a
        headers_a = {"Authorization": f"Bearer {key_a}"}
        headers_b = {"Authorization": f"Bearer {key_b}"}

        assert requests.get(f"{base_url}/api/health/", timeout=10).json()["status"] == "ok"

        with open(shared_dicom_dir / CHEST_ZIP, "rb") as study_zip:
            created = requests.post(
                f"{base_url}/api/studies/",
                headers=headers_a,
                files={"file": ("exame.zip", study_zip, "application/zip")},
                data={"categories": ["lung", "adipose_tissue", "soft_tissue", "bone"]},
                timeout=60,
            )
        assert created.status_code == 202, created.text
        study_id = created.json()["id"]
        assert created.json()["status"] == "uploaded"

        final, seen = wait_for_terminal_status(base_url, study_id, headers_a)
        assert final["status"] == "succeeded", (final, seen)
        assert final["progress"] == 100
        assert final["error"] is None

        study = requests.get(
            f"{base_url}/api/studies/{study_id}/", headers=headers_a, timeout=10
        ).json()
        assert study["modality"] == "CT"
        assert study["slice_count"] == 3

        result = requests.get(
            f"{base_url}/api/studies/{study_id}/result/", headers=headers_a, timeout=10
        )
        assert result.status_code == 200
        links = result.json()
        image_response = requests.get(links["image_url"], timeout=30)
        mask_response = requests.get(links["mask_url"], timeout=30)
        assert image_response.status_code == 200
        assert mask_response.status_code == 200
        image = load_nifti(image_response.content)
        mask = load_nifti(mask_response.content)

        assert image.shape == (512, 512, 64)
        assert mask.shape == image.shape
        assert image.get_data_dtype() == np.int16
        assert mask.get_data_dtype() == np.uint8
        np.testing.assert_array_equal(image.affine, mask.affine)
        np.testing.assert_array_equal(image.get_qform(), image.get_sform())
        np.testing.assert_array_equal(mask.get_qform(), mask.get_sform())
        assert mask.header.get_intent()[0] == "label"
        mask_values = set(np.unique(np.asarray(mask.dataobj)).tolist()) - {0}
        assert mask_values, "the mask has no labels"
        assert mask_values <= {1, 3, 4, 5}, "a category that was not requested appears"
        assert {label["value"] for label in links["labels"]} == mask_values
        assert all(label["color"].startswith("#") for label in links["labels"])

        alias = requests.get(
            f"{base_url}/api/studies/{study_id}/visualization/", headers=headers_a, timeout=10
        )
        assert alias.status_code == 200

        signature = dict(parse_qsl(urlsplit(links["mask_url"]).query))["X-Amz-Signature"]
        flipped = "1" if signature[0] == "0" else "0"
        tampered = with_query(links["mask_url"], **{"X-Amz-Signature": flipped + signature[1:]})
        assert requests.get(tampered, timeout=10).status_code == 403
        other_key = links["mask_url"].replace("mask.nii.gz", "image.nii.gz")
        assert requests.get(other_key, timeout=10).status_code == 403

        fresh = requests.get(
            f"{base_url}/api/studies/{study_id}/result/", headers=headers_a, timeout=10
        ).json()
        time.sleep(PRESIGNED_TTL_S + 2)
        assert requests.get(fresh["image_url"], timeout=10).status_code in (400, 403)

        for suffix in ("", "status/", "result/"):
            response = requests.get(
                f"{base_url}/api/studies/{study_id}/{suffix}", headers=headers_b, timeout=10
            )
            assert response.status_code == 404

        too_large = requests.post(
            f"{base_url}/api/studies/",
            headers=headers_a | {"Accept-Language": "en"},
            files={"file": ("big.zip", io.BytesIO(b"\0" * (9 * 1024 * 1024)), "application/zip")},
            timeout=60,
        )
        assert too_large.status_code == 413
        assert too_large.json()["code"] == "upload_too_large"
        assert "8 MiB" in too_large.json()["detail"] or "8.0 MiB" in too_large.json()["detail"]
