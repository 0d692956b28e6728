"""Image files <-> float arrays, and the ir/ + vi/ pair-folder convention.

Conventions used everywhere in egmt_ros:
- grey images are float32 ``H x W`` in [0, 1];
- colour images are float32 ``H x W x 3`` **RGB** in [0, 1];
- a pair folder holds ``ir/NAME.ext`` and ``vi/NAME.ext`` paired by file stem.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def load_image(path: str | Path) -> np.ndarray:
    """Read an image file as float32 in [0, 1]: grey ``H x W`` or RGB ``H x W x 3``.

    A 3-channel file whose channels are identical (IR stored as colour) comes back grey.
    16-bit files are scaled by 65535. Raises FileNotFoundError naming the path.
    """
    p = Path(path)
    raw = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise FileNotFoundError(f"cannot read image {p} (missing or not an image)")
    img = raw.astype(np.float32) / np.float32(65535.0) if raw.dtype == np.uint16 else from_uint8(raw)
    if img.ndim == 3:
        if img.shape[2] == 4:
            img = img[:, :, :3]
        if np.array_equal(img[:, :, 0], img[:, :, 1]) and np.array_equal(img[:, :, 1], img[:, :, 2]):
            return np.ascontiguousarray(img[:, :, 0])
        img = np.ascontiguousarray(img[:, :, ::-1])  # BGR -> RGB
    return img


def from_uint8(arr: np.ndarray) -> np.ndarray:
    """uint8 -> float32 [0, 1] (``arr / 255``): the one conversion used for files and camera frames alike."""
    return arr.astype(np.float32) / np.float32(255.0)


def to_gray(img: np.ndarray) -> np.ndarray:
    """Grey (the ITU-R BT.601 luma Y) of an RGB float image; a grey image is returned as is."""
    if img.ndim == 2:
        return img
    return (0.299 * img[..., 0] + 0.587 * img[..., 1] + 0.114 * img[..., 2]).astype(np.float32)


def to_uint8(img: np.ndarray) -> np.ndarray:
    """Float [0, 1] -> uint8 with rounding (half to even) and clipping (no per-image stretching)."""
    x = np.multiply(img, 255.0)  # one temporary, rounded and clipped in place
    np.rint(x, out=x)
    np.clip(x, 0, 255, out=x)
    return x.astype(np.uint8)


def save_image(path: str | Path, img: np.ndarray) -> None:
    """Write a float [0, 1] (or uint8) grey/RGB image as an 8-bit file; creates parent folders."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    arr = img if img.dtype == np.uint8 else to_uint8(img)
    if arr.ndim == 3:
        arr = arr[:, :, ::-1]  # RGB -> BGR for OpenCV
    if not cv2.imwrite(str(p), arr):
        raise OSError(f"cannot write image {p}")


def list_pairs(folder: str | Path) -> list[tuple[str, Path, Path]]:
    """``[(stem, ir_path, vi_path), ...]`` of a pair folder (``ir/`` + ``vi/``), sorted by name.

    Raises FileNotFoundError if the folder has no ``ir/`` or ``vi/`` subfolder or no pair.
    """
    root = Path(folder)
    ir_dir, vi_dir = root / "ir", root / "vi"
    if not ir_dir.is_dir() or not vi_dir.is_dir():
        raise FileNotFoundError(f"{root} is not a pair folder: expected {ir_dir} and {vi_dir}")
    vi_by_stem = {p.stem: p for p in vi_dir.iterdir() if p.suffix.lower() in IMAGE_EXTS}
    pairs = [(p.stem, p, vi_by_stem[p.stem]) for p in sorted(ir_dir.iterdir())
             if p.suffix.lower() in IMAGE_EXTS and p.stem in vi_by_stem]
    if not pairs:
        raise FileNotFoundError(f"no ir/vi pairs with matching names in {root}")
    return pairs


def check_pair(ir_path: str | Path, vi_path: str | Path) -> None:
    """Raise ValueError naming the file and the problem when either file is not a readable image or the two
    differ in size. Reads the file headers only (Pillow), so a whole folder is checked before any work starts."""
    from PIL import Image, UnidentifiedImageError

    sizes = []
    for role, path in (("IR", ir_path), ("VI", vi_path)):
        try:
            with Image.open(path) as im:
                sizes.append(im.size)
        except FileNotFoundError:
            raise FileNotFoundError(f"{role} image not found: {path}") from None
        except (UnidentifiedImageError, OSError) as exc:
            raise ValueError(f"{role} file {path} is not a readable image ({exc.__class__.__name__})") from None
    if sizes[0] != sizes[1]:
        raise ValueError(f"size mismatch: IR {ir_path} is {sizes[0][0]}x{sizes[0][1]}, "
                         f"VI {vi_path} is {sizes[1][0]}x{sizes[1][1]}; a pair must be registered to one size")


def load_pair(ir_path: str | Path, vi_path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(IR grey ``H x W``, VI grey or RGB) as float32 [0, 1]; raises ValueError if sizes differ."""
    ir = to_gray(load_image(ir_path))
    vi = load_image(vi_path)
    if ir.shape[:2] != vi.shape[:2]:
        raise ValueError(f"size mismatch: IR {ir_path} is {ir.shape[1]}x{ir.shape[0]}, "
                         f"VI {vi_path} is {vi.shape[1]}x{vi.shape[0]}")
    return ir, vi
