"""Fixtures of the patient data tests: the reference segmenter and steps run in-process."""

from __future__ import annotations

import pytest

from tests.segmenter.server import run_segmenter

SEGMENTER_TOKEN = "privacy-segmenter-token"


@pytest.fixture(scope="module")
def segmenter(tmp_path_factory):
    with run_segmenter(tmp_path_factory.mktemp("segmenter"), token=SEGMENTER_TOKEN) as running:
        yield running


@pytest.fixture
def pipeline_app(make_app, segmenter):
    """The app on a small model grid, calling the reference segmenter."""
    return make_app(
        inference_api_url=segmenter.base_url,
        inference_api_token=SEGMENTER_TOKEN,
        dicom_target_hw=(32, 32),
        dicom_target_slices=8,
    )


@pytest.fixture
def run_steps_inline(monkeypatch):
    """Make each step run the next one in this process instead of queueing it."""
    from portal import tasks

    real_infer, real_write = tasks.run_inference, tasks.write_results
    monkeypatch.setattr(tasks, "run_inference", lambda **kwargs: real_infer.call_local(**kwargs))
    monkeypatch.setattr(tasks, "write_results", lambda **kwargs: real_write.call_local(**kwargs))
