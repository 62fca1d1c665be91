"""The inference client against the real reference segmenter in a subprocess."""

import uuid

import numpy as np
import pytest
from scipy import ndimage

from portal.inference import InferenceClient, InferenceError
from tests.segmenter.volumes import write_input_npz

LUNG, AIRWAY, ADIPOSE, SOFT_TISSUE, BONE = 1, 2, 3, 4, 5


def make_client(server, **options) -> InferenceClient:
    settings = {
        "job_timeout_s": 60.0,
        "poll_initial_s": 0.05,
        "poll_max_s": 0.2,
        "max_retries": 1,
        "retry_initial_s": 0.05,
    }
    settings.update(options)
    return InferenceClient(server.base_url, server.token, **settings)


def new_key() -> str:
    return uuid.uuid4().hex


def share_with_label(mask, region, label) -> float:
    # Compare away from region borders, where the noise makes single voxels ambiguous.
    core = ndimage.binary_erosion(region)
    return float(np.mean(mask[core] == label))


def test_phantom_labels_land_in_regions(segmenter, chest_phantom, tmp_path):
    npz_path = write_input_npz(tmp_path / "volume.npz", chest_phantom)
    seen = []
    with make_client(segmenter) as client:
        job_id = client.submit(npz_path, [], idempotency_key=new_key())
        final = client.wait(job_id, on_progress=seen.append)
        result = client.fetch_result(job_id, expected_shape_zyx=chest_phantom.image.shape)

    assert final.status == "succeeded"
    assert final.progress == 100
    assert seen[-1] == final
    assert result.mask.dtype == np.uint8
    assert result.mask.shape == chest_phantom.image.shape
    assert result.labels == (LUNG, AIRWAY, ADIPOSE, SOFT_TISSUE, BONE)
    assert share_with_label(result.mask, chest_phantom.lungs, LUNG) > 0.99
    assert share_with_label(result.mask, chest_phantom.airway, AIRWAY) > 0.95
    assert share_with_label(result.mask, chest_phantom.adipose, ADIPOSE) > 0.95
    assert share_with_label(result.mask, chest_phantom.soft_tissue, SOFT_TISSUE) > 0.95
    assert share_with_label(result.mask, chest_phantom.bone, BONE) > 0.99
    assert share_with_label(result.mask, chest_phantom.outside, 0) > 0.99


def test_requested_categories_limit_labels(segmenter, chest_phantom, tmp_path):
    npz_path = write_input_npz(tmp_path / "volume.npz", chest_phantom, categories=(LUNG, BONE))
    with make_client(segmenter) as client:
        job_id = client.submit(npz_path, [LUNG, BONE], idempotency_key=new_key())
        client.wait(job_id)
        result = client.fetch_result(job_id, expected_shape_zyx=chest_phantom.image.shape)

    assert result.labels == (LUNG, BONE)
    assert set(np.unique(result.mask).tolist()) == {0, LUNG, BONE}
    assert share_with_label(result.mask, chest_phantom.lungs, LUNG) > 0.99
    assert share_with_label(result.mask, chest_phantom.adipose, 0) > 0.99


def test_mr_fails_modality_not_supported(segmenter, chest_phantom, tmp_path):
    npz_path = write_input_npz(tmp_path / "volume.npz", chest_phantom, modality="MR")
    with make_client(segmenter) as client:
        job_id = client.submit(npz_path, [], idempotency_key=new_key())
        with pytest.raises(InferenceError) as caught:
            client.wait(job_id)
        status = client.get_status(job_id)

    assert caught.value.code == "inference_failed"
    assert caught.value.provider_code == "modality_not_supported"
    assert status.status == "failed"
    assert status.error_code == "modality_not_supported"


def test_same_idempotency_key_same_job(segmenter, chest_phantom, tmp_path):
    npz_path = write_input_npz(tmp_path / "volume.npz", chest_phantom)
    key = new_key()
    with make_client(segmenter) as client:
        first = client.submit(npz_path, [LUNG], idempotency_key=key)
        second = client.submit(npz_path, [LUNG], idempotency_key=key)
        other = client.submit(npz_path, [LUNG], idempotency_key=new_key())

    assert second == first
    assert other != first


def test_reused_key_other_request_rejected(segmenter, chest_phantom, tmp_path):
    npz_path = write_input_npz(tmp_path / "volume.npz", chest_phantom)
    key = new_key()
    with make_client(segmenter) as client:
        client.submit(npz_path, [LUNG], idempotency_key=key)
        with pytest.raises(InferenceError) as caught:
            client.submit(npz_path, [BONE], idempotency_key=key)

    assert caught.value.code == "inference_rejected"
    assert caught.value.http_status == 409
    assert caught.value.provider_code == "idempotency_key_conflict"


def test_cancel_running_job(slow_segmenter, chest_phantom, tmp_path):
    npz_path = write_input_npz(tmp_path / "volume.npz", chest_phantom)
    with make_client(slow_segmenter) as client:
        job_id = client.submit(npz_path, [], idempotency_key=new_key())
        client.cancel(job_id)
        status = client.get_status(job_id)
        final = client.wait(job_id)
        with pytest.raises(InferenceError) as caught:
            client.fetch_result(job_id, expected_shape_zyx=chest_phantom.image.shape)

    assert status.status == "cancelled"
    assert final.status == "cancelled"
    assert caught.value.code == "inference_rejected"
    assert caught.value.http_status == 409


def test_cancel_finished_job_keeps_result(segmenter, chest_phantom, tmp_path):
    npz_path = write_input_npz(tmp_path / "volume.npz", chest_phantom)
    with make_client(segmenter) as client:
        job_id = client.submit(npz_path, [BONE], idempotency_key=new_key())
        client.wait(job_id)
        client.cancel(job_id)
        status = client.get_status(job_id)
        result = client.fetch_result(job_id, expected_shape_zyx=chest_phantom.image.shape)

    assert status.status == "succeeded"
    assert result.labels == (BONE,)


def test_wrong_token_rejected_401(segmenter, chest_phantom, tmp_path):
    npz_path = write_input_npz(tmp_path / "volume.npz", chest_phantom)
    with make_client(segmenter) as client:
        job_id = client.submit(npz_path, [], idempotency_key=new_key())
    with InferenceClient(segmenter.base_url, "wrong-token") as client:
        with pytest.raises(InferenceError) as on_submit:
            client.submit(npz_path, [], idempotency_key=new_key())
        with pytest.raises(InferenceError) as on_status:
            client.get_status(job_id)

    for caught in (on_submit, on_status):
        assert caught.value.code == "inference_rejected"
        assert caught.value.http_status == 401
        assert caught.value.provider_code == "unauthorized"


def test_invalid_volume_rejected_400(segmenter, chest_phantom, tmp_path):
    npz_path = write_input_npz(
        tmp_path / "volume.npz",
        chest_phantom,
        overrides={"image": chest_phantom.image.astype(np.float64)},
    )
    with make_client(segmenter) as client:
        with pytest.raises(InferenceError) as caught:
            client.submit(npz_path, [], idempotency_key=new_key())

    assert caught.value.code == "inference_rejected"
    assert caught.value.http_status == 400
    assert caught.value.provider_code == "invalid_dtype"
