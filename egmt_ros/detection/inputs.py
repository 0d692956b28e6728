"""What the detector sees for a named input: a fused image (any registered fusion method) or one modality.

``ir`` is the infrared image alone (grey), ``vi`` the visible image alone; any other name is a fusion method from
``egmt_ros.fusion.methods``, run through the one fusion path (:func:`egmt_ros.fusion.engine.fuse_images`): it fuses
IR with the visible luma and the result takes the visible chroma, so a colour visible image gives a colour fused
image.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from egmt_ros.core.images import load_image, load_pair, save_image
from egmt_ros.fusion.engine import fuse_images
from egmt_ros.fusion.methods import get_method

#: Single-modality input names (not fusion methods).
MODALITIES: tuple[str, ...] = ("ir", "vi")


class DetectorInput:
    """Builds the detector's input image for one input name (``ir``, ``vi`` or a fusion method name; keyword
    arguments go to the method's factory, e.g. ``DetectorInput("egmt", model=PATH)``)."""

    def __init__(self, name: str, **method_kwargs: object) -> None:
        self.name = name
        self.method = None if name in MODALITIES else get_method(name, **method_kwargs)

    @property
    def cache_key(self) -> str:
        """Identifies the method and, for learned ones, its weights and entities.

        Uses the method's ``cache_key`` or ``model_id`` attribute if it has one, its ``checkpoint`` file (path, size,
        mtime) and its ``entities`` list, so a retrained model or another entity set never reuses stale images.
        """
        if self.method is None:
            return self.name
        parts = [self.name, str(getattr(self.method, "cache_key", None) or getattr(self.method, "model_id", None)
                                or "")]
        ckpt = getattr(self.method, "checkpoint", None)
        if ckpt is not None and Path(ckpt).is_file():
            parts.append(_file_sig(Path(ckpt)))
        parts.append(",".join(getattr(self.method, "entities", None) or []))
        return "|".join(parts)

    def make(self, ir: np.ndarray, vi: np.ndarray) -> np.ndarray:
        """IR grey ``H x W`` and visible grey/RGB (float [0, 1], same size) -> the detector input (float [0, 1])."""
        if self.name == "ir":
            return ir
        if self.name == "vi":
            return vi
        return fuse_images(self.method, ir, vi)


def _file_sig(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"


class FusedCache:
    """On-disk cache of detector inputs, keyed by input name (+ model id) and source files (path, size, mtime).

    Files: ``<root>/<name>/<stem>-<hash>.png`` (8-bit PNG, lossless).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path_for(self, maker: DetectorInput, stem: str, ir_path: Path, vi_path: Path) -> Path:
        """Where the input for this pair is (or will be) cached."""
        key = hashlib.sha1(f"{maker.cache_key}|{_file_sig(ir_path)}|{_file_sig(vi_path)}".encode()).hexdigest()[:12]
        return self.root / maker.name / f"{stem}-{key}.png"

    def get(self, maker: DetectorInput, stem: str, ir_path: Path, vi_path: Path) -> Path:
        """The cached input image file for this pair, computed and written on a miss."""
        path = self.path_for(maker, stem, Path(ir_path), Path(vi_path))
        if not path.is_file():
            ir, vi = load_pair(ir_path, vi_path)
            tmp = path.with_name(f".{path.stem}.{os.getpid()}.png")
            save_image(tmp, maker.make(ir, vi))
            os.replace(tmp, path)
        return path

    def load(self, maker: DetectorInput, stem: str, ir_path: Path, vi_path: Path) -> np.ndarray:
        """The cached input image as float [0, 1] (grey or RGB)."""
        return load_image(self.get(maker, stem, ir_path, vi_path))
