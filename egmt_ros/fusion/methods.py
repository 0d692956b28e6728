"""One interface for every fusion method (learned or classical) and a registry by name.

A method fuses the IR grey image and the visible luma (float32 ``H x W`` in [0, 1], same size) into a fused
luma of the same size in [0, 1]; colour is handled outside (``egmt_ros.fusion.color``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np


class FusionMethod(Protocol):
    """What the benchmark, the fusion CLI and the fusion node call."""

    name: str

    def fuse(self, ir: np.ndarray, vi_y: np.ndarray) -> np.ndarray:
        """Fuse IR grey and visible luma (float32 H x W, [0, 1]) into a fused luma (float32 H x W, [0, 1])."""
        ...

    def num_params(self) -> int | None:
        """Number of learnable parameters (0 for classical rules, None if unknown)."""
        ...

    def flops(self, height: int, width: int) -> float | None:
        """Floating-point operations for one frame of this size, if known."""
        ...


@dataclass
class FunctionMethod:
    """A fusion method made from a plain function (the classical baselines)."""

    name: str
    func: Callable[[np.ndarray, np.ndarray], np.ndarray]
    description: str = ""
    params: dict = field(default_factory=dict)

    def fuse(self, ir: np.ndarray, vi_y: np.ndarray) -> np.ndarray:
        if ir.shape != vi_y.shape:
            raise ValueError(f"{self.name}: IR {ir.shape} and visible {vi_y.shape} differ in size")
        return np.clip(self.func(ir, vi_y, **self.params), 0.0, 1.0).astype(np.float32)

    def num_params(self) -> int | None:
        return 0

    def flops(self, height: int, width: int) -> float | None:
        return None


_FACTORIES: dict[str, Callable[..., FusionMethod]] = {}


def register(name: str, factory: Callable[..., FusionMethod]) -> None:
    """Register a factory under ``name`` (later registrations replace earlier ones)."""
    _FACTORIES[name] = factory


def available() -> list[str]:
    """Names of every registered method."""
    _load_builtin()
    return sorted(_FACTORIES)


def get_method(name: str, **kwargs) -> FusionMethod:
    """Build the method registered as ``name``; unknown names raise KeyError listing the known ones."""
    if name not in _FACTORIES:
        _load_builtin(name)
    if name not in _FACTORIES:
        raise KeyError(f"unknown fusion method {name!r}; known: {', '.join(sorted(_FACTORIES))}")
    return _FACTORIES[name](**kwargs)


def _load_builtin(wanted: str | None = None) -> None:
    """Import the modules that register the built-in methods (classical rules, then EGMT models).

    With ``wanted`` it stops as soon as that name is registered, so a classical method never imports torch.
    """
    import importlib

    for mod in ("egmt_ros.fusion.classical", "egmt_ros.model.method"):
        if wanted is not None and wanted in _FACTORIES:
            return
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as exc:  # a module not written yet; anything else must surface
            if exc.name != mod:
                raise
