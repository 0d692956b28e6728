"""Train an EGMT model (paper or rt variant) on IR/visible pairs with entity annotations.

    python -m egmt_ros.cli.train --config rt|paper --data DIR [DIR ...] [--videos DIR ...]
        [--entities ANNOTATIONS.json ...] [--epochs N] [--steps N] [--batch B] [--crop S] [--lr LR]
        [--val-fraction F] [--out DIR] [--resume CKPT] [--device cpu|cuda] [--threads N] [--seed S]
        [--max-minutes M] [--set KEY=VALUE ...] [--export PATH] [--det-weight W --trust-pickle]

- Adam on the network and the loss's own parameters (the task weights of Eq. 10); defaults (lr, batch, epochs,
  crop, loss weights) come from the chosen config (``paper_config`` / ``rt_config``), every flag overrides one,
  ``--set KEY=VALUE`` overrides any other config field (e.g. ``--set channels=8``).
- Data: ``--data`` pair / sequence folders and ``--videos`` video folders (frames every ``--video-every``);
  the test set (tno*) and LLVIP are refused unless ``--allow-test-data`` / ``--allow-restricted-data``.
  A deterministic held-out split by scene (``--val-fraction``). Patches: random ``crop`` crops (``--repeats`` per
  image and epoch), or the paper's fixed sliding step (``--sliding-step S``); ``--degrade P`` veils (smoke/fog),
  darkens or glares the visible crop with probability P (``egmt_ros.data.datasets.degrade_visible``).
- Entities / labels: ``--entities`` annotation files (format in :mod:`egmt_ros.data.datasets`); entity texts are
  encoded with the config's text encoder (all-MiniLM-L6-v2) once per label. The class list of the multi-label head
  is the first annotation file's. Without annotations the multi-label head gets no loss (said in the log).
- Validation after every epoch (and every ``--val-every`` steps): the loss on the validation images and fusion
  metrics (``egmt_ros.metrics.fusion.compute_all``) on up to ``--val-images`` of them at most ``--val-size`` pixels
  on the long side (8-bit, as a saved image). ``best.pt`` keeps the checkpoint with the best ``--best-metric``.
- Loss: the config's ``objective`` (``rt``: the information-aware one, ``paper``: Eq. 11-14; docs/model.md), with
  the entity boxes of the annotations as region weights; ``--det-weight W`` adds the detection-aware term (a
  frozen YOLOv5n, :mod:`egmt_ros.model.detection_loss`; its checkpoint is a pickle: needs ``--trust-pickle``).
- Checkpoints ``OUT/last.pt`` (every ``--save-every`` steps and at each epoch end) and ``OUT/best.pt``, with the
  optimizer state, the loss state, epoch and step (``--resume OUT/last.pt`` continues the step count), and the model
  card ``NAME.card.json`` beside each. ``--export PATH`` writes the best weights (no optimizer state) at the end.
  A resumed run takes the checkpoint's config (only ``--epochs``, ``--lr``, ``--batch``, ``--crop`` override it) and
  records the earlier commands in the card (``training.previous_commands``). ``--init CKPT`` starts a new run
  (this run's config, e.g. other loss weights) from a checkpoint's weights (same architecture).
- ``torchrun --nproc_per_node K -m egmt_ros.cli.train ...``: DistributedDataParallel (process group initialised
  when WORLD_SIZE > 1, DistributedSampler); only rank 0 validates and writes.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader

from egmt_ros.data.datasets import (VIDEO_EVERY, PairFolderDataset, PairSample, TextFeatureCache, collate_pairs,
                                    collect_samples, entity_texts, load_annotations, split_samples)
from egmt_ros.core.color import split_luma
from egmt_ros.core.images import load_pair, to_uint8
from egmt_ros.model.config import EGMTConfig, paper_config, rt_config

LOG = logging.getLogger("egmt_ros.train")
#: Metrics where lower is better (for ``--best-metric``): the loss and its parts (``ssim`` is the loss part, ``SSIM``
#: the fusion metric), Nabf.
LOWER_IS_BETTER = {"loss", "fus", "int", "edge", "ssim", "det", "cla", "Nabf", "nabf"}


# --------------------------------------------------------------------------- arguments

def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of the training CLI."""
    ap = argparse.ArgumentParser(prog="python -m egmt_ros.cli.train", description=__doc__.split("\n")[0])
    ap.add_argument("--config", choices=("rt", "paper"), default="rt", help="network variant / default settings")
    ap.add_argument("--data", nargs="+", required=True, help="pair folders (ir/ + vi/) or sequence folders")
    ap.add_argument("--videos", nargs="*", default=[], help="video folders (infrared/ + visible/ NAME.mp4)")
    ap.add_argument("--video-every", type=int, default=VIDEO_EVERY, help="use every k-th video frame")
    ap.add_argument("--entities", nargs="*", default=[], help="entity annotation JSON files")
    ap.add_argument("--epochs", type=int, default=None, help="epochs (default: the config's)")
    ap.add_argument("--steps", type=int, default=None, help="stop at this global step (counts across resumes)")
    ap.add_argument("--batch", type=int, default=None, help="batch size (default: the config's)")
    ap.add_argument("--crop", type=int, default=None, help="training patch size (default: the config's)")
    ap.add_argument("--lr", type=float, default=None, help="Adam learning rate (default: the config's)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override any EGMTConfig field (JSON value), e.g. channels=8 or 'alphas=[1,15,5]'")
    ap.add_argument("--sliding-step", type=int, default=None,
                    help="paper mode: every crop window of this fixed step instead of random crops")
    ap.add_argument("--repeats", type=int, default=1, help="random crops per image and epoch")
    ap.add_argument("--degrade", type=float, default=0.0,
                    help="probability of a smoke/fog, darkness or glare degradation of a visible training crop")
    ap.add_argument("--val-fraction", type=float, default=0.1, help="held-out fraction (by scene, deterministic)")
    ap.add_argument("--val-images", type=int, default=8, help="validation images scored with the metric suite")
    ap.add_argument("--val-size", type=int, default=256, help="long side of the validation images (pixels)")
    ap.add_argument("--val-every", type=int, default=0, help="also validate every N steps (0: epoch ends only)")
    ap.add_argument("--best-metric", default="loss", help="validation value that selects best.pt (default loss)")
    ap.add_argument("--save-every", type=int, default=200, help="write last.pt every N steps")
    ap.add_argument("--out", default="out/train", help="output folder (checkpoints, cards, log)")
    ap.add_argument("--name", default=None, help="model name in the card (default egmt_<config>)")
    ap.add_argument("--export", default=None, help="at the end, write the best weights (no optimizer) here")
    ap.add_argument("--resume", default=None, help="checkpoint to continue from (last.pt)")
    ap.add_argument("--init", default=None,
                    help="start from this checkpoint's weights only (this run's config, fresh optimizer and step 0)")
    ap.add_argument("--det-weight", type=float, default=None,
                    help="weight of the detection-aware term (frozen YOLOv5n on the fused image; 0 = off)")
    ap.add_argument("--det-weights", default=None, help="YOLOv5 checkpoint of the term (default: data root yolov5n.pt)")
    ap.add_argument("--trust-pickle", action="store_true",
                    help="allow loading the YOLOv5 checkpoint (a pickle) of the detection-aware term")
    ap.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-minutes", type=float, default=None, help="stop (and save) after this wall time")
    ap.add_argument("--allow-test-data", action="store_true", help="allow training on the test set (tno*)")
    ap.add_argument("--allow-restricted-data", action="store_true", help="allow LLVIP (not shippable)")
    ap.add_argument("--no-progress", action="store_true", help="no tqdm bar (log lines every --log-every steps)")
    ap.add_argument("--log-every", type=int, default=50, help="with --no-progress: log the loss every N steps")
    return ap


def _parse_override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise SystemExit(f"--set expects KEY=VALUE, got {text!r}")
    key, val = text.split("=", 1)
    try:
        return key.strip(), json.loads(val)
    except json.JSONDecodeError:
        return key.strip(), val


def build_config(args: argparse.Namespace, classes: Sequence[str]) -> EGMTConfig:
    """The config: the variant's defaults, then ``--set`` overrides, then the explicit flags, then the classes."""
    kw: dict[str, Any] = dict(_parse_override(o) for o in args.overrides)
    for flag, field in (("epochs", "epochs"), ("batch", "batch_size"), ("crop", "crop"), ("lr", "lr"),
                        ("det_weight", "det_weight")):
        if getattr(args, flag, None) is not None:
            kw[field] = getattr(args, flag)
    if args.sliding_step is not None:
        kw["crop_stride"] = args.sliding_step
    if classes:
        kw["num_classes"] = len(classes)
        kw["class_names"] = list(classes)
    return (rt_config if args.config == "rt" else paper_config)(**kw)


# --------------------------------------------------------------------------- environment

def git_commit() -> str:
    """``git rev-parse HEAD`` of the source checkout, or ``"uncommitted"``."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=10)
        sha = out.stdout.strip()
        return sha if out.returncode == 0 and len(sha) == 40 else "uncommitted"
    except (OSError, subprocess.SubprocessError):
        return "uncommitted"


def hardware(device: torch.device) -> str:
    """A one-line description of the training hardware."""
    if device.type == "cuda":
        return f"GPU {torch.cuda.get_device_name(device)} (x{max(1, int(os.environ.get('WORLD_SIZE', '1')))})"
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU {cpu}, {torch.get_num_threads()} torch threads ({os.cpu_count()} logical cores visible)"


def parse_device(text: str, local_rank: int = 0, world: int = 1) -> torch.device:
    """The training device of ``--device``: ``cpu``, ``cuda`` (= ``cuda:<local rank>``, an explicit index as
    ``torch.cuda.set_device`` needs) or ``cuda:N`` (under torchrun with ``world`` > 1 always the local rank's GPU).
    Raises SystemExit with a one-line message on anything else."""
    try:
        dev = torch.device(text.strip().lower())
    except (RuntimeError, ValueError):
        raise SystemExit(f"--device: expected cpu, cuda or cuda:N, got {text!r}") from None
    if dev.type == "cpu":
        return torch.device("cpu")
    if dev.type != "cuda":
        raise SystemExit(f"--device: expected cpu, cuda or cuda:N, got {text!r}")
    if world > 1 or dev.index is None:
        return torch.device("cuda", local_rank)
    return dev


def _setup_distributed(args: argparse.Namespace) -> tuple[int, int, torch.device]:
    """(rank, world size, device); initialises the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    device = parse_device(args.device, int(os.environ.get("LOCAL_RANK", "0")), world)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world > 1:
        import torch.distributed as dist

        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return rank, world, device


# --------------------------------------------------------------------------- model / loss / checkpoints

def _metrics_module() -> Any | None:
    try:
        from egmt_ros.metrics import fusion as fm  # noqa: WPS433
        return fm if hasattr(fm, "compute_all") else None
    except ImportError:
        return None


def _save(path: Path, model: torch.nn.Module, card: dict[str, Any], optimizer: torch.optim.Optimizer | None,
          extra: dict[str, Any] | None) -> None:
    """Checkpoint + card (atomic writes by :func:`egmt_ros.model.checkpoint.save_checkpoint`)."""
    from egmt_ros.model.checkpoint import save_checkpoint

    save_checkpoint(path, model, card, optimizer_state=optimizer.state_dict() if optimizer else None, extra=extra)


# --------------------------------------------------------------------------- validation

class ValSet:
    """Validation images at reduced size (uint8 grey IR + visible Y) with their entity features and labels."""

    def __init__(self, samples: Sequence[PairSample], size: int, records: dict, classes: Sequence[str],
                 text_features: Any, text_dim: int, max_entities: int) -> None:
        self.items: list[dict[str, Any]] = []
        for s in samples:
            ir, vi = load_pair(s.ir, s.vi)
            y, _ = split_luma(vi)
            h, w = ir.shape
            k = min(1.0, size / max(h, w))
            if k < 1.0:
                dsz = (max(8, round(w * k)), max(8, round(h * k)))
                ir = cv2.resize(ir, dsz, interpolation=cv2.INTER_AREA)
                y = cv2.resize(y, dsz, interpolation=cv2.INTER_AREA)
            rec = records.get(s.key)
            texts = entity_texts(rec, max_entities)
            ent = text_features(texts) if (texts and text_features) else np.zeros((0, text_dim), np.float32)
            lab = np.asarray(rec["labels"], np.float32) if rec else np.zeros(len(classes), np.float32)
            self.items.append({"ir": to_uint8(ir), "vi": to_uint8(y), "ent": ent, "labels": lab,
                               "has": rec is not None, "name": f"{s.dataset}/{s.name}"})


@torch.no_grad()
def validate(model: torch.nn.Module, loss_fn: torch.nn.Module, val: ValSet, device: torch.device,
             n_metric: int, class_weights: torch.Tensor | None) -> dict[str, float]:
    """Mean validation loss (and its parts) over all validation images, and fusion metrics on ``n_metric``."""
    model.eval()
    fm = _metrics_module()
    sums: dict[str, float] = {}
    scores: list[dict[str, float]] = []
    for i, it in enumerate(val.items):
        ir = torch.from_numpy(it["ir"].astype(np.float32) / 255.0)[None, None].to(device)
        vi = torch.from_numpy(it["vi"].astype(np.float32) / 255.0)[None, None].to(device)
        ent = torch.from_numpy(it["ent"])[None].to(device)
        mask = torch.ones(ent.shape[:2], dtype=torch.bool, device=device)
        fused, logits = model(ir, vi, ent, mask)
        labels = torch.from_numpy(it["labels"])[None].to(device)
        total, parts = compute_loss(loss_fn, fused, ir, vi, logits, labels, bool(it["has"]), class_weights)
        parts = {k: v for k, v in parts.items() if k != "total"}
        for k, v in {"loss": float(total), **parts}.items():
            sums[k] = sums.get(k, 0.0) + float(v)
        if fm is not None and i < n_metric:
            f8 = to_uint8(fused[0, 0].clamp(0, 1).cpu().numpy())
            names = getattr(fm, "PAPER_METRICS", None)
            scores.append({k: float(v) for k, v in fm.compute_all(f8, it["ir"], it["vi"], names=names).items()})
    out = {k: v / max(1, len(val.items)) for k, v in sums.items()}
    for k in (scores[0] if scores else {}):
        vals = [s[k] for s in scores if not math.isnan(s[k])]
        out[k] = float(np.mean(vals)) if vals else float("nan")
    model.train()
    return out


# --------------------------------------------------------------------------- one step

def compute_loss(loss_fn: torch.nn.Module, fused: torch.Tensor, ir: torch.Tensor, vi: torch.Tensor,
                 logits: torch.Tensor | None, labels: torch.Tensor | None, has_labels: bool,
                 class_weights: torch.Tensor | None,
                 regions: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """The EGMT loss; when the batch is not fully labelled (or the model has no head) only L_fus (Eq. 11, or the
    information-aware objective; ``regions`` are the entity-box masks it weights by)."""
    if logits is not None and labels is not None and has_labels:
        return loss_fn(fused, ir, vi, logits, labels, class_weights=class_weights, regions=regions)
    total, parts = loss_fn.fusion_loss(fused, ir, vi, regions)
    parts["total"] = parts["fus"]
    return total, parts


def train_step(net: torch.nn.Module, loss_fn: torch.nn.Module, opt: torch.optim.Optimizer, batch: dict[str, Any],
               device: torch.device, class_weights: torch.Tensor | None = None,
               world: int = 1) -> tuple[torch.Tensor, dict[str, float]]:
    """One Adam step on a collated batch; returns (loss before the step, its parts).

    Under DDP (``world`` > 1) the gradients of the loss's own parameters (the task weights ``w``), which live
    outside the DDP module, are averaged across ranks here.
    """
    ir, vi = batch["ir"].to(device), batch["vi_y"].to(device)
    fused, logits = net(ir, vi, batch["ent"].to(device), batch["ent_mask"].to(device))
    regions = batch.get("regions")
    total, parts = compute_loss(loss_fn, fused, ir, vi, logits, batch["labels"].to(device),
                                bool(batch["has_labels"].all()), class_weights,
                                regions.to(device) if regions is not None else None)
    opt.zero_grad(set_to_none=True)
    total.backward()
    if world > 1:
        import torch.distributed as dist

        for p in loss_fn.parameters():
            if p.grad is not None:
                dist.all_reduce(p.grad)
                p.grad /= world
    opt.step()
    return total.detach(), parts


# --------------------------------------------------------------------------- main

def _text_encoder(cfg: EGMTConfig) -> Any:
    """The config's text encoder (all-MiniLM-L6-v2 by default; ``hash-<dim>`` for tests)."""
    from egmt_ros.model.text import get_text_encoder

    enc = get_text_encoder(cfg.text_encoder, cfg.text_dim)
    if enc.dim != cfg.text_dim:
        raise SystemExit(f"text encoder {enc.id} gives {enc.dim}-d features, the config expects {cfg.text_dim}")
    return enc


def main(argv: Sequence[str] | None = None) -> int:
    """Run the training CLI; returns the exit status."""
    raw_argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(raw_argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    t_start = time.time()
    torch.set_num_threads(max(1, args.threads))
    rank, world, device = _setup_distributed(args)
    is_main = rank == 0
    torch.manual_seed(args.seed + rank)
    np.random.seed(args.seed + rank)

    # ---- annotations, config
    classes, records, ann_encoder = load_annotations(args.entities) if args.entities else ([], {}, "")
    label_sources = sorted({json.loads(Path(p).read_text()).get("label_source", "annotation file")
                            for p in args.entities})
    resume_raw: dict[str, Any] | None = None
    if args.resume:
        from egmt_ros.model.checkpoint import read_checkpoint

        resume_raw = read_checkpoint(args.resume)
    cfg = build_config(args, classes)
    if resume_raw is not None:
        cfg = EGMTConfig.from_dict(resume_raw["card"]["config"])
        for flag, field in (("epochs", "epochs"), ("lr", "lr"), ("batch", "batch_size"), ("crop", "crop")):
            if getattr(args, flag) is not None:
                setattr(cfg, field, getattr(args, flag))
    if ann_encoder and ann_encoder != cfg.text_encoder:
        LOG.warning("annotations name text encoder %s, the model uses %s", ann_encoder, cfg.text_encoder)

    # ---- data
    folders = list(args.data) + list(args.videos or [])
    samples = collect_samples(folders, every=args.video_every, allow_test=args.allow_test_data,
                              allow_restricted=args.allow_restricted_data)
    train_s, val_s = split_samples(samples, args.val_fraction)
    need_text = cfg.uses_text and any(entity_texts(records.get(s.key)) for s in samples)
    text_features = TextFeatureCache(_text_encoder(cfg)) if need_text else None
    mode = "sliding" if args.sliding_step else "random"
    train_ds = PairFolderDataset(train_s, crop=cfg.crop, mode=mode, stride=cfg.crop_stride, repeats=args.repeats,
                                 classes=cfg.class_names, records=records, text_features=text_features,
                                 text_dim=cfg.text_dim, max_entities=cfg.max_entities, seed=args.seed + rank,
                                 degrade=args.degrade)
    if cfg.use_mt and records and train_ds.num_labelled < len(train_ds.samples):
        LOG.warning("%d of %d training pairs have no annotation record (their classification loss is skipped)",
                    len(train_ds.samples) - train_ds.num_labelled, len(train_ds.samples))
    if cfg.use_mt and not records:
        LOG.warning("no --entities annotations: the multi-label head gets no classification loss")
    sampler = None
    if world > 1:
        from torch.utils.data.distributed import DistributedSampler

        sampler = DistributedSampler(train_ds, num_replicas=world, rank=rank, shuffle=True, seed=args.seed)
    loader = DataLoader(train_ds, batch_size=cfg.batch_size, shuffle=sampler is None, sampler=sampler,
                        collate_fn=collate_pairs, num_workers=0, drop_last=len(train_ds) >= cfg.batch_size)
    val = ValSet(val_s, args.val_size, records, cfg.class_names, text_features, cfg.text_dim,
                 cfg.max_entities) if (val_s and is_main) else None

    # ---- model, loss, optimizer
    from egmt_ros.model.losses import EGMTLoss, class_weights_from_labels
    from egmt_ros.model.network import EGMT

    model = EGMT(cfg).to(device)
    loss_fn = EGMTLoss(cfg).to(device)
    if cfg.det_weight > 0:
        from egmt_ros.detection.yolov5_backend import load_frozen_yolov5
        from egmt_ros.model.detection_loss import DetectionConsistencyLoss

        loss_fn.task_loss = DetectionConsistencyLoss(load_frozen_yolov5(args.det_weights, device, args.trust_pickle))
    lab = train_ds.label_matrix()
    class_weights = (class_weights_from_labels(torch.from_numpy(lab)).to(device)
                     if cfg.use_mt and len(lab) else None)
    params = list(model.parameters()) + [p for p in loss_fn.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.lr)
    epoch, step, step_in_epoch = 0, 0, 0
    best = math.inf if args.best_metric in LOWER_IS_BETTER else -math.inf
    history: list[dict[str, Any]] = []
    if resume_raw is not None:
        model.load_state_dict(resume_raw["state_dict"])
        extra = resume_raw.get("extra") or {}
        if resume_raw.get("optimizer") is not None:
            opt.load_state_dict(resume_raw["optimizer"])
            for g in opt.param_groups:
                g["lr"] = cfg.lr
        if extra.get("loss_state"):
            loss_fn.load_state_dict(extra["loss_state"])
        epoch, step = int(extra.get("epoch", 0)), int(extra.get("step", 0))
        step_in_epoch = int(extra.get("step_in_epoch", 0))
        if extra.get("best_metric", args.best_metric) == args.best_metric:  # another metric: start afresh
            best = float(extra.get("best", math.inf))
        history = list(extra.get("history", []))
        LOG.info("resumed %s at epoch %d, step %d", args.resume, epoch, step)
    if args.init and resume_raw is None:
        from egmt_ros.model.checkpoint import read_checkpoint

        model.load_state_dict(read_checkpoint(args.init)["state_dict"])
        LOG.info("initialised the weights from %s", args.init)
    net: torch.nn.Module = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        net = DDP(model, device_ids=[device.index] if device.type == "cuda" else None,
                  find_unused_parameters=True)

    out = Path(args.out)
    name = args.name or f"egmt_{args.config}"
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
    if is_main and _metrics_module() is None:
        LOG.warning("egmt_ros.metrics.fusion.compute_all not available: validation reports the loss only")
    lower = args.best_metric in LOWER_IS_BETTER
    best_sign = 1.0 if lower else -1.0

    prev_wall = float(((resume_raw or {}).get("extra") or {}).get("wall_time_s", 0.0))
    prev_train = ((resume_raw or {}).get("card") or {}).get("training") or {}
    prev_cmds = list(prev_train.get("previous_commands", [])) + ([prev_train["command"]] if "command" in prev_train
                                                                 else [])
    data_list = [{"path": str(f), "pairs": sum(1 for s in samples if Path(f).resolve().name == s.dataset)}
                 for f in folders]

    def card(val_metrics: dict[str, float] | None) -> dict[str, Any]:
        return {
            "name": name, "variant": cfg.variant, "config": cfg.to_dict(),
            "text_encoder": {"id": cfg.text_encoder, "dim": cfg.text_dim},
            "classes": list(cfg.class_names),
            "label_source": "; ".join(label_sources) if label_sources else "none (no annotations)",
            "training_data": data_list,
            "commit": git_commit(),
            "validation": {"step": step, "epoch": epoch, "n_pairs": len(val_s),
                           "metric_pairs": min(args.val_images, len(val_s)), "size": args.val_size,
                           "metrics": val_metrics or {}},
            "training": {
                "command": "python -m egmt_ros.cli.train " + shlex.join(raw_argv),
                "wall_time_s": round(prev_wall + time.time() - t_start, 1),
                "hardware": hardware(device), "world_size": world, "epoch": epoch, "step": step,
                "train_pairs": len(train_s), "val_pairs": len(val_s), "seed": args.seed,
                "excluded": "tno* (test set) and llvip* (terms) unless explicitly allowed",
                "torch": str(torch.__version__),
                **({"previous_commands": prev_cmds} if prev_cmds else {}),
                **({"init_from": str(args.init)} if args.init and resume_raw is None else {}),
            },
        }

    def extra() -> dict[str, Any]:
        return {"epoch": epoch, "step": step, "step_in_epoch": step_in_epoch, "best": best,
                "best_metric": args.best_metric, "loss_state": loss_fn.state_dict(), "history": history,
                "wall_time_s": prev_wall + time.time() - t_start}

    last_val: dict[str, float] | None = history[-1]["val"] if history else None

    def run_validation() -> None:
        nonlocal best, last_val
        if val is None:
            return
        v = validate(model, loss_fn, val, device, args.val_images, class_weights)
        last_val = v
        history.append({"epoch": epoch, "step": step, "val": v})
        LOG.info("validation epoch %d step %d: %s", epoch, step,
                 ", ".join(f"{k}={x:.4f}" for k, x in v.items()))
        key = v.get(args.best_metric)
        if key is not None and not math.isnan(key) and best_sign * key < best_sign * best:
            best = key
            _save(out / "best.pt", model, card(v), opt, extra())

    deadline = t_start + 60.0 * args.max_minutes if args.max_minutes else math.inf
    max_steps = args.steps if args.steps is not None else math.inf
    stop = step >= max_steps
    net.train()
    while epoch < cfg.epochs and not stop:
        if sampler is not None:
            sampler.set_epoch(epoch)
        n_batches = len(loader)
        bar = None
        if is_main and not args.no_progress:
            from tqdm import tqdm

            bar = tqdm(total=n_batches, initial=step_in_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                       unit="step", dynamic_ncols=True)
        remaining = n_batches - step_in_epoch  # a mid-epoch resume runs only this epoch's remaining batches
        for bi, batch in enumerate(loader):
            if bi >= remaining:
                break
            total, parts = train_step(net, loss_fn, opt, batch, device, class_weights, world)
            step += 1
            step_in_epoch += 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{float(total):.4f}")
            elif is_main and args.log_every and step % args.log_every == 0:
                LOG.info("epoch %d step %d: %s (%.1f min)", epoch + 1, step,
                         ", ".join(f"{k}={v:.4f}" for k, v in parts.items()), (time.time() - t_start) / 60)
            if is_main and step % max(1, args.save_every) == 0:
                _save(out / "last.pt", model, card(last_val), opt, extra())
            if is_main and args.val_every and step % args.val_every == 0:
                run_validation()
            if step >= max_steps or time.time() > deadline:
                stop = True
                break
        if bar is not None:
            bar.close()
        if step_in_epoch >= n_batches:
            epoch += 1
            step_in_epoch = 0
            if is_main and not (args.val_every and step % args.val_every == 0):
                run_validation()
        if is_main:
            _save(out / "last.pt", model, card(last_val), opt, extra())
    if stop and is_main and val is not None and (not history or history[-1]["step"] != step):
        run_validation()
        _save(out / "last.pt", model, card(last_val), opt, extra())

    if is_main:
        if not (out / "best.pt").is_file():
            _save(out / "best.pt", model, card(last_val), opt, extra())
        if args.export:
            from egmt_ros.model.checkpoint import load_checkpoint

            best_model, best_card = load_checkpoint(out / "best.pt")
            best_card = dict(best_card)
            best_card["wall_time_s"] = round(prev_wall + time.time() - t_start, 1)
            best_card["exported_from"] = str(out / "best.pt")
            _save(Path(args.export), best_model, best_card, None, None)
            LOG.info("exported %s -> %s", out / "best.pt", args.export)
        LOG.info("done: epoch %d, step %d, %.1f min", epoch, step, (time.time() - t_start) / 60)
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
