"""What the command-line tools share: output folders that a failed run does not leave behind."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def output_folder(path: Path) -> Iterator[Path]:
    """Create the folder ``path`` (and its parents) for a run's outputs; if the block raises (or is interrupted),
    remove it again when this call created it, so a failed run leaves no empty or half-written folder. A folder
    that existed before is left as it is."""
    existed = path.exists()
    path.mkdir(parents=True, exist_ok=True)
    try:
        yield path
    except BaseException:
        if not existed:
            shutil.rmtree(path, ignore_errors=True)
        raise
