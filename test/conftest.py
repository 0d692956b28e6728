"""Shared pytest fixtures for egmt_ros."""

from __future__ import annotations

from pathlib import Path

import pytest

from egmt_ros.paths import data_root as _data_root


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The shared data root (``$EGMT_DATA`` or ``../shared/data``); the tests need it and fail clearly without it."""
    return _data_root(must_exist=True)
