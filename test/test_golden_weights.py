"""Golden values of the shipped weights ``models/egmt_rt.pt``: fixed inputs -> stored fused outputs.

A change of the weights or of the numerics (network code, torch) changes these values, so it has to be a deliberate,
visible update of ``test/golden/egmt_rt.json`` (as open_clip does for its models). After shipping new weights (or a
deliberate numerics change), regenerate the file with the one command

    python test/test_golden_weights.py --write

(from the repository root, with the environment of the tests, as ``make test`` sets it up) and commit it
with the weights. The inputs are synthetic and seeded (no data root needed); the method runs as ``get_method
("egmt_rt", backend="torch", device="cpu", dtype="float32")``, once without entities and once with the entity words
below (encoded by the model's own text encoder, MiniLM).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).resolve().parent / "golden" / "egmt_rt.json"
WEIGHTS = ROOT / "models" / "egmt_rt.pt"
COMMAND = "python test/test_golden_weights.py --write"
HEIGHT, WIDTH = 24, 32
ENTITIES = ["person", "car"]
#: Largest |difference| allowed: float32 CPU eager on another machine or thread count reorders sums (~1e-6).
ATOL = 2e-4


def golden_inputs() -> tuple[np.ndarray, np.ndarray]:
    """(IR, visible luma): float32 ``HEIGHT x WIDTH`` in [0, 1], seeded: a warm target on a cool gradient, and
    textured visible light with a shadow."""
    rng = np.random.default_rng(15)
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    ir = 0.2 + 0.3 * x / WIDTH + 0.6 * np.exp(-((x - 20) ** 2 + (y - 10) ** 2) / 18.0)
    vi = 0.5 + 0.2 * np.sin(x / 2.0) * np.cos(y / 3.0) - 0.3 * (x < 10)
    ir = ir + 0.02 * rng.standard_normal(ir.shape)
    vi = vi + 0.05 * rng.standard_normal(vi.shape)
    return np.clip(ir, 0, 1).astype(np.float32), np.clip(vi, 0, 1).astype(np.float32)


def fused_outputs() -> dict[str, np.ndarray]:
    """The shipped model's fused luma for the golden inputs: ``{"no_entities": ..., "entities": ...}``."""
    from egmt_ros.fusion.methods import get_method

    method = get_method("egmt_rt", backend="torch", device="cpu", dtype="float32")
    ir, vi = golden_inputs()
    out = {"no_entities": method.fuse(ir, vi)}
    method.set_entities(ENTITIES)
    out["entities"] = method.fuse(ir, vi)
    return out


def weights_sha256() -> str:
    return hashlib.sha256(WEIGHTS.read_bytes()).hexdigest()


def write() -> None:
    """Regenerate ``GOLDEN`` from the current weights and code."""
    doc = {"weights": str(WEIGHTS.relative_to(ROOT)), "weights_sha256": weights_sha256(), "size": [HEIGHT, WIDTH],
           "entities": ENTITIES, "regenerate": COMMAND,
           "outputs": {k: np.round(v.astype(np.float64), 6).tolist() for k, v in fused_outputs().items()}}
    GOLDEN.parent.mkdir(parents=True, exist_ok=True)
    GOLDEN.write_text(json.dumps(doc, separators=(",", ":")) + "\n")
    print(f"wrote {GOLDEN.relative_to(ROOT)} for {doc['weights']} (sha256 {doc['weights_sha256'][:12]})")


def test_shipped_weights_give_the_golden_outputs() -> None:
    golden = json.loads(GOLDEN.read_text())
    sha = weights_sha256()
    changed = (f"{golden['weights']} changed (sha256 {sha[:12]}, the golden values are of "
               f"{golden['weights_sha256'][:12]}): if that is deliberate, regenerate them with `{COMMAND}`")
    outputs = fused_outputs()
    assert set(outputs) == set(golden["outputs"])
    for name, got in outputs.items():
        want = np.asarray(golden["outputs"][name], dtype=np.float32)
        assert got.shape == want.shape == (HEIGHT, WIDTH)
        diff = float(np.abs(got - want).max())
        assert diff <= ATOL, f"{name}: max |fused - golden| = {diff:.2e}. " + (
            changed if sha != golden["weights_sha256"] else f"same weights: the numerics changed; if deliberate, "
            f"regenerate with `{COMMAND}`")
    assert sha == golden["weights_sha256"], changed
    # the entity words reach this model's output: the two outputs differ by more than the tolerance (a broken text
    # path would make them equal). The shipped model's entity effect is small (7e-4 at most on this crop: its
    # information prior does most of the work; with/without-entity comparison in docs/model.md)
    assert float(np.abs(outputs["entities"] - outputs["no_entities"]).max()) > 2 * ATOL


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit(f"usage: {COMMAND}")
    write()
