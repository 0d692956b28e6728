"""EGMT checkpoints: weights + model card in one ``.pt`` file, and the card again as ``NAME.card.json``.

The model card (a plain dict) records what a user needs to trust and reuse the weights:
``config`` (the full :class:`EGMTConfig`), ``text_encoder`` (``{"id", "dim"}``), ``classes`` (multi-label class
names), ``training_data``, ``commit``, ``validation`` (metrics), ``training`` (command, time, hardware), plus what
:func:`save_checkpoint` fills in itself (``format``, ``num_params``, ``variant``, ``saved_at``).

Files are written atomically (temporary file + rename) and read with ``torch.load(weights_only=True)``: the
optional ``optimizer_state`` and ``extra`` must hold only tensors and plain Python types.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path
from typing import Any

import torch

from egmt_ros.model.config import EGMTConfig
from egmt_ros.model.network import EGMT

FORMAT = "egmt_ros.checkpoint/1"


def card_path(path: str | Path) -> Path:
    """``models/egmt_rt.pt`` -> ``models/egmt_rt.card.json``."""
    p = Path(path)
    return p.with_name(p.stem + ".card.json")


def _complete_card(model: EGMT, card: dict[str, Any]) -> dict[str, Any]:
    cfg = model.config
    out = dict(card)
    out["format"] = FORMAT
    out["variant"] = cfg.variant
    out["config"] = cfg.to_dict()
    out["num_params"] = model.num_params()
    te = dict(out.get("text_encoder") or {})
    te.setdefault("id", cfg.text_encoder)
    te.setdefault("dim", cfg.text_dim)
    if int(te["dim"]) != cfg.text_dim:
        raise ValueError(f"card text encoder dim {te['dim']} != model text_dim {cfg.text_dim}")
    out["text_encoder"] = te
    out.setdefault("classes", list(cfg.class_names))
    out.setdefault("saved_at", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    return out


def save_checkpoint(path: str | Path, model: EGMT, card: dict[str, Any], optimizer_state: dict | None = None,
                    extra: dict | None = None) -> Path:
    """Write weights + completed card to ``path`` and the card to ``NAME.card.json``; returns ``path``."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    full = _complete_card(model, card)
    payload = {"format": FORMAT, "card": full,
               "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
               "optimizer": optimizer_state, "extra": extra}
    tmp = p.with_name(p.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, p)
    cp = card_path(p)
    tmp_c = cp.with_name(cp.name + ".tmp")
    tmp_c.write_text(json.dumps(full, indent=2, sort_keys=False, default=str) + "\n")
    os.replace(tmp_c, cp)
    return p


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The raw payload (``format``, ``card``, ``state_dict``, ``optimizer``, ``extra``), e.g. to resume training.

    Missing file -> FileNotFoundError naming the path and how to get weights.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(
            f"EGMT checkpoint not found: {p}. Train one with `python -m egmt_ros.cli.train` (it writes "
            f"NAME.pt + NAME.card.json), or put the shipped weights (models/egmt_rt.pt from the egmt_ros "
            f"repository) there, or pass --model PATH.")
    try:
        payload = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a text file, a truncated file, a foreign pickle: all "not a checkpoint"
        raise ValueError(f"{p} is not an egmt_ros checkpoint: torch.load cannot read it "
                         f"({type(exc).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{p} is not an egmt_ros checkpoint (format {FORMAT})")
    return payload


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu",
                    expect_text_encoder: str | None = None,
                    expect_text_dim: int | None = None) -> tuple[EGMT, dict[str, Any]]:
    """(model in eval mode, card). Refuses a checkpoint made for another text encoder.

    ``expect_text_encoder``/``expect_text_dim``: the encoder the caller will feed; if either differs from the
    card's, ValueError names both (features from another encoder would be silently meaningless).
    """
    payload = read_checkpoint(path, map_location)
    card = payload["card"]
    te = card.get("text_encoder") or {}
    have_id, have_dim = str(te.get("id")), int(te.get("dim", -1))
    if expect_text_encoder is not None and expect_text_encoder != have_id:
        raise ValueError(f"{path}: model was trained with text encoder {have_id!r} ({have_dim}-d), "
                         f"but the caller uses {expect_text_encoder!r}"
                         + (f" ({expect_text_dim}-d)" if expect_text_dim else ""))
    if expect_text_dim is not None and expect_text_dim != have_dim:
        raise ValueError(f"{path}: model expects {have_dim}-d features from {have_id!r}, "
                         f"but the caller's encoder {expect_text_encoder or '?'!r} gives {expect_text_dim}-d")
    cfg = EGMTConfig.from_dict(card["config"])
    model = EGMT(cfg)
    model.load_state_dict(payload["state_dict"], strict=True)
    model.to(map_location).eval()
    return model, card
