"""Fixtures for the segmenter tests: running services started on free loopback ports."""

import pytest

from tests.segmenter.server import run_segmenter


@pytest.fixture(scope="module")
def segmenter(tmp_path_factory):
    with run_segmenter(tmp_path_factory.mktemp("segmenter"), token="service-token") as running:
        yield running


@pytest.fixture(scope="module")
def slow_segmenter(tmp_path_factory):
    """A segmenter whose jobs stay running for 3 s before the work starts."""
    with run_segmenter(
        tmp_path_factory.mktemp("slow-segmenter"),
        token="service-token",
        extra_env={"SEGMENTER_JOB_DELAY_S": "3"},
    ) as running:
        yield running
