"""The fusion-method contract and the explicit registry of methods by name.

A method fuses the IR grey image and the visible luma (float32 ``H x W`` in [0, 1], same size) into a fused
luma of the same size in [0, 1]; colour is handled outside (:mod:`egmt_ros.core.color`).

Registration is explicit: :func:`register` stores a factory under a name together with the options it takes (a
learned model takes ``device``, ``backend``, ...; a classical rule none), so a caller can pass its whole
configuration to :func:`make_method` without knowing which method takes what. The built-in methods are registered
in one place, :mod:`egmt_ros.fusion.methods`; nothing is imported by name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, runtime_checkable

import numpy as np


class FusionMethod(Protocol):
    """What the fusion engine, the benchmarks and the detection inputs call."""

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


@runtime_checkable
class EntityGuided(Protocol):
    """A method steered by entity words (EGMT): it encodes them with its own text encoder."""

    uses_text: bool  # False for a model trained without the text branch (entities are then ignored)

    @property
    def text_encoder(self) -> Any:
        """The text encoder the model was trained with (``encode(words) -> [N, D]``)."""
        ...

    def set_entities(self, labels: list[str]) -> None:
        """Use these entity words for the following frames ([] clears)."""
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


@dataclass(frozen=True)
class MethodSpec:
    """A registered method: its factory and the keyword options the factory takes."""

    name: str
    factory: Callable[..., FusionMethod]
    options: frozenset[str] = frozenset()
    description: str = ""


_REGISTRY: dict[str, MethodSpec] = {}


def register(name: str, factory: Callable[..., FusionMethod], options: tuple[str, ...] = (),
             description: str = "") -> None:
    """Register ``factory`` under ``name``, taking the keyword ``options`` (a later registration replaces one)."""
    _REGISTRY[name] = MethodSpec(name, factory, frozenset(options), description)


def available() -> list[str]:
    """Names of every registered method."""
    return sorted(_REGISTRY)


def spec(name: str) -> MethodSpec:
    """The registration of ``name``; KeyError listing the known names."""
    if name not in _REGISTRY:
        raise KeyError(f"unknown fusion method {name!r}; known: {', '.join(available())}")
    return _REGISTRY[name]


def get_method(name: str, **kwargs: Any) -> FusionMethod:
    """Build the method registered as ``name`` with ``kwargs`` (an option it does not take raises TypeError)."""
    return spec(name).factory(**kwargs)


def make_method(name: str, **options: Any) -> FusionMethod:
    """Build ``name`` with those of ``options`` it takes (and that are not None); the rest are ignored, so one
    configuration (the node's parameters, a CLI's flags) serves every method."""
    s = spec(name)
    return s.factory(**{k: v for k, v in options.items() if k in s.options and v is not None})
