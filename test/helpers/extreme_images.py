"""Extreme IR/visible pairs for the fusion tests: flat, saturated, a single bright pixel, equal sources."""

from __future__ import annotations

import torch

def dot_at(h: int, w: int) -> tuple[int, int]:
    """Where :func:`extreme_pairs` puts the single bright pixel of an ``h x w`` image."""
    return h // 2, w // 3


def extreme_pairs(h: int, w: int, seed: int = 1) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``name -> (ir, vi)``, each ``[1, 1, h, w]`` in [0, 1]: all zero, all one, constant 0.5, IR on / VI off and the
    reverse, one bright pixel (:func:`dot_at`) in IR or in VI on black, and IR == VI (random)."""
    zeros, ones = torch.zeros(1, 1, h, w), torch.ones(1, 1, h, w)
    dot = zeros.clone()
    dot[(..., *dot_at(h, w))] = 1.0
    x = torch.rand(1, 1, h, w, generator=torch.Generator().manual_seed(seed))
    return {"zeros": (zeros, zeros), "ones": (ones, ones), "half": (ones / 2, ones / 2), "ir on": (ones, zeros),
            "vi on": (zeros, ones), "dot in ir": (dot, zeros), "dot in vi": (zeros, dot), "ir == vi": (x, x.clone())}
