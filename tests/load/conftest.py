"""Load and fault tests: real ``loom serve`` / ``loom worker`` processes on PostgreSQL, driven by bench/load.py.

They take 20-45 s each, so they run only with ``LOOM_LOAD=1`` (``.ci/run``
sets it) and are marked ``load`` (``pytest -m load`` selects them).
"""
from __future__ import annotations

import os

import pytest

from tests.conftest import _pg_server_url


@pytest.fixture
def pg_server():
    """The shared PostgreSQL server URL (each test creates and drops its own database on it)."""
    if os.environ.get("LOOM_LOAD") != "1":
        pytest.skip("load/fault test: set LOOM_LOAD=1 to run (.ci/run does)")
    url = _pg_server_url()
    if url is None:
        pytest.skip("load/fault tests need PostgreSQL: set LOOM_TEST_PG_URL")
    return url
