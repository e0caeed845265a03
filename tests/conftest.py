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
    # Commands cache features and shards in the user cache by default: tests get a fresh one of their own.
    import tempfile

    os.environ["CATLIP_CACHE"] = tempfile.mkdtemp(prefix="catlip-test-cache-")
    # Several workers share two cores; one intra-op thread keeps test timings stable and results deterministic.
    os.environ.setdefault("OMP_NUM_THREADS", os.environ.get("CATLIP_TEST_THREADS", "1"))
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(int(os.environ.get("CATLIP_TEST_THREADS", "1")))


class TimeLimitExceeded(BaseException):
    """Not an Exception: the loader's `except Exception` around image decoding must not swallow it."""


@pytest.fixture
def time_limit_s():
    """`with time_limit_s(60): ...` fails the test instead of hanging on inputs that once looped forever."""
    import contextlib
    import signal

    @contextlib.contextmanager
    def limit(seconds: float):
        def _raise(signum, frame):
            raise TimeLimitExceeded(f"still running after {seconds} s (endless loop?)")

        old = signal.signal(signal.SIGALRM, _raise)
        signal.setitimer(signal.ITIMER_REAL, seconds)
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)

    return limit
