"""Fixtures for the inference client tests: running segmenters and phantom volumes."""

import pytest

from tests.inference.fake_server import FakeInferenceServer
from tests.segmenter.phantoms import make_chest_phantom
from tests.segmenter.server import run_segmenter


@pytest.fixture(scope="module")
def segmenter(tmp_path_factory):
    """A reference segmenter on a free loopback port, stopped after the module."""
    with run_segmenter(tmp_path_factory.mktemp("segmenter"), token="test-token-fast") as running:
        yield running


@pytest.fixture(scope="module")
def slow_segmenter(tmp_path_factory):
    """A segmenter whose jobs stay running for 5 s first, so they can be cancelled."""
    with run_segmenter(
        tmp_path_factory.mktemp("slow-segmenter"),
        token="test-token-slow",
        extra_env={"SEGMENTER_JOB_DELAY_S": "5"},
    ) as running:
        yield running


@pytest.fixture(scope="module")
def chest_phantom():
    return make_chest_phantom()


@pytest.fixture
def fake_server():
    """A scripted misbehaving inference server on a free loopback port."""
    server = FakeInferenceServer()
    server.start()
    yield server
    server.stop()
