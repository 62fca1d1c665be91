import numpy as np

from portal.studies.error_catalogue import STUDY_ERROR_MESSAGES


def test_every_pipeline_and_inference_code_has_a_message():
    from portal.inference import errors as inference_errors
    from portal.pipeline import ERROR_CODES

    inference_codes = {
        value
        for name, value in vars(inference_errors).items()
        if name.startswith("INFERENCE_") and isinstance(value, str)
    }
    missing = (set(ERROR_CODES) - {"pipeline_error"} | inference_codes) - set(STUDY_ERROR_MESSAGES)
    assert missing == set()


def test_label_statistics_uses_voxel_volume():
    from portal.tasks import label_statistics

    mask = np.zeros((4, 10, 10), dtype=np.uint8)
    mask[0, :2, :5] = 1
    mask[1:3, 5:, 5:] = 3
    affine = np.diag([0.5, 0.5, 2.0, 1.0])
    stats = label_statistics(mask, affine)
    assert stats == [
        {"value": 1, "voxel_count": 10, "volume_ml": round(10 * 0.5 / 1000, 2)},
        {"value": 3, "voxel_count": 50, "volume_ml": round(50 * 0.5 / 1000, 2)},
    ]


def test_claim_moves_once(app, make_clinic, make_api_key, queued, client):
    import io
    import uuid

    from portal.extensions import db
    from portal.studies.models import Study, StudyStatus
    from portal.tasks import claim
    from tests.web.conftest import post_multipart, zip_bytes

    token = make_api_key(make_clinic())
    body = post_multipart(
        client,
        "/api/studies/",
        {"file": (io.BytesIO(zip_bytes({"a": b"b"})), "s.zip")},
        {"Authorization": f"Bearer {token}"},
    ).get_json()
    with app.app_context():
        attempt_id = db.session.get(Study, uuid.UUID(body["id"])).latest_attempt.id
        first = claim(attempt_id, StudyStatus.UPLOADED, StudyStatus.CONVERTING)
        second = claim(attempt_id, StudyStatus.UPLOADED, StudyStatus.CONVERTING)
        assert first is not None
        assert first.status == StudyStatus.CONVERTING
        assert first.progress == 10
        assert first.started_at is not None
        assert second is None


def test_terminal_attempt_refuses_moves(app):
    import pytest

    from portal.studies.models import Attempt, InvalidTransition, StudyStatus

    attempt = Attempt(status=StudyStatus.UPLOADED, number=1)
    attempt.fail("archive_invalid")
    with pytest.raises(InvalidTransition):
        attempt.move_to(StudyStatus.CONVERTING)
    with pytest.raises(InvalidTransition):
        attempt.move_to(StudyStatus.CANCELLED)
    assert attempt.error_code == "archive_invalid"
