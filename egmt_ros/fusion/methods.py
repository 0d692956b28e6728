"""The built-in fusion methods, registered by name in one explicit list (:mod:`egmt_ros.core.methods`).

Classical rules (``average``, ``max``, ``lp``, ``gff``: :mod:`egmt_ros.fusion.classical`) and EGMT (``egmt_rt``:
the shipped weights, ``egmt``: any checkpoint, :mod:`egmt_ros.model.method`). The EGMT factories import the model
only when called, so a classical method never imports torch. Import this module (or call its re-exported
``get_method`` / ``make_method`` / ``available``) to have every built-in method registered.
"""

from __future__ import annotations

from typing import Any

from egmt_ros.core.methods import FunctionMethod, FusionMethod, available, get_method, make_method, register
from egmt_ros.fusion import classical

__all__ = ["FunctionMethod", "FusionMethod", "available", "get_method", "make_method", "register", "EGMT_OPTIONS"]

#: What :func:`make_method` passes to EGMT (``model``: a checkpoint path; the rest: :class:`egmt_ros.model.method.EGMTFuser`;
#: a backend's own options go through ``get_method`` directly).
EGMT_OPTIONS = ("model", "device", "backend", "dtype", "threads")


def _egmt_rt(**kwargs: Any) -> FusionMethod:
    """The shipped real-time model ``models/egmt_rt.pt`` (``model=PATH`` loads another checkpoint under this name)."""
    from egmt_ros.model.method import load_egmt

    return load_egmt(name="egmt_rt", **kwargs)


def _egmt(**kwargs: Any) -> FusionMethod:
    """Any EGMT checkpoint: ``get_method("egmt", model=PATH)``."""
    from egmt_ros.model.method import load_egmt

    if kwargs.get("model") is None:
        raise ValueError("get_method('egmt') needs model=PATH to a checkpoint (or use 'egmt_rt')")
    return load_egmt(name="egmt", **kwargs)


for _name, (_func, _description, _defaults) in classical.METHODS.items():
    register(_name, classical.factory(_name), tuple(_defaults), _description)
register("egmt_rt", _egmt_rt, EGMT_OPTIONS, "EGMT real-time model (models/egmt_rt.pt)")
register("egmt", _egmt, EGMT_OPTIONS, "EGMT, any checkpoint (model=PATH)")
