"""A hostile model file for the tests: unpickling it creates a marker file (what a crafted .pt's code could do)."""

from __future__ import annotations

import pickle
from pathlib import Path


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def write_crafted_pt(path: Path, marker: Path) -> Path:
    """Write ``path``: a pickle whose loading runs ``open(marker, 'w')``; returns ``path``."""
    path.write_bytes(pickle.dumps({"model": _Payload(marker)}))
    return path
