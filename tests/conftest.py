"""Shared test fixtures. Real data is read from ../shared/data and tests that need it skip when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CATLIP_SHARED_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path to ../shared/data; skips the test with the reason when it is not there."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (set CATLIP_SHARED_DATA to point at it)")
    return SHARED_DATA


def pytest_configure(config):
    # Several workers share two cores; one intra-op thread keeps test timings stable and results deterministic.
    os.environ.setdefault("OMP_NUM_THREADS", os.environ.get("CATLIP_TEST_THREADS", "1"))
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(int(os.environ.get("CATLIP_TEST_THREADS", "1")))
