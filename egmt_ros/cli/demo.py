"""The demo: a real sample through the whole graph, recorded, evaluated, reported (``make demo``).

    python -m egmt_ros.cli.demo [--sample NAME|PAIR_DIR|BAG|IR.mp4:VI.mp4] [--out out/demo] [--max-frames N]
        [--rate X] [--classes person,...] [-p [NODE:]NAME:=VALUE ...]

Default sample: the M2VD video pair 0117_1620 of the data root (``$EGMT_DATA``, default ../shared/data: m2vd/,
MIT licence; cite VideoFusion, arXiv 2503.23359), where smoke hides the people from the visible camera and the
thermal camera sees them. Steps, each a separate process as on a robot:
  1. make_bag: the sample -> a rosbag2 (mcap) with mono16 thermal counts (AGC exercised) and 2 ms stamp jitter;
  2. the graph: fusion_node, entity_node and detection_node, one process each (python -m egmt_ros.nodes.bringup
     --nodes NAME; logs in out/demo/NAME_node.log);
  3. record: /egmt/fused, /egmt/detections, /egmt/entities, /diagnostics -> out/demo/output_bag;
  4. play the input bag at 1x into the graph;
  5. evaluate: metrics per frame with a pixel-average baseline, detections, latency, fusion rate ->
     out/demo/report.html and summary.md, opening with what was run (sample, model, backend, rate, hardware) and
     the headline: persons per frame in the fused vs the visible frames alone (same detector, up to 60 frames spread
     evenly over the fused ones; --classes picks the classes of interest).
Nothing is copied from the data root into the repository; everything is written under --out.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from egmt_ros.nodes.environment import apply_fastdds_profile
from egmt_ros.paths import data_root

DEFAULT_VIDEO = "0117_1620"
GRAPH_NODES = ("fusion", "entity", "detection")
#: Recorded together with the camera topics: latency needs the inputs' receive times on the same clock.
OUTPUT_TOPICS = ["/egmt/fused", "/egmt/detections", "/egmt/entities", "/diagnostics", "/thermal/image_raw",
                 "/rgb/image_raw"]

#: What the player waits for (``rosbag_tools.play --wait-for``): each node's subscriptions, made once its model is
#: loaded, and the recorder's camera subscriptions, made once it sees the player's publishers (the player then waits
#: until it is matched with all of them, so the recorder gets the first frame too).
PLAY_WAIT_FOR = [a for t in ("/thermal/image_raw:fusion_node", "/rgb/image_raw:fusion_node",
                             "/egmt/fused:detection_node", "/thermal/image_raw:egmt_bag_recorder",
                             "/rgb/image_raw:egmt_bag_recorder") for a in ("--wait-for", t)]


def resolve_sample(sample: str | None) -> dict:
    """make_bag keyword arguments (or ``{"bag": path}``) for a sample; FileNotFoundError says what to provide."""
    root = data_root()
    if sample is None or sample == DEFAULT_VIDEO or (sample and "/" not in sample and ":" not in sample
                                                     and not Path(sample).exists()):
        name = sample or DEFAULT_VIDEO
        ir, vi = root / "m2vd" / "infrared" / f"{name}.mp4", root / "m2vd" / "visible" / f"{name}.mp4"
        if not ir.is_file() or not vi.is_file():
            raise FileNotFoundError(
                f"demo sample {name!r} not found: looked for {ir} and {vi}. Provide the data root with "
                f"EGMT_DATA=/path/to/data (it must hold m2vd/infrared/{name}.mp4 and m2vd/visible/{name}.mp4), or "
                "pass SAMPLE=<image-pair folder with ir/ and vi/ | rosbag2 | IR.mp4:VI.mp4>.")
        return {"ir_video": ir, "vi_video": vi}
    if ":" in sample:
        ir, vi = (Path(p) for p in sample.split(":", 1))
        for p in (ir, vi):
            if not p.is_file():
                raise FileNotFoundError(f"demo sample video not found: {p}")
        return {"ir_video": ir, "vi_video": vi}
    p = Path(sample)
    if (p / "ir").is_dir() and (p / "vi").is_dir():
        return {"pairs": p}
    if (p / "metadata.yaml").is_file() or p.suffix in (".mcap", ".db3"):
        check_bag(p)
        return {"bag": p}
    raise FileNotFoundError(f"demo sample {sample!r} is neither an m2vd video name, an image-pair folder "
                            "(ir/ + vi/), a rosbag2, nor IR.mp4:VI.mp4")


def check_bag(path: Path) -> None:
    """ValueError (FileNotFoundError) unless ``path`` is a complete bag with both camera topics: the demo plays a
    sample whole, so a damaged one is refused before the graph starts."""
    from rosbag_tools.bagio import BagReader

    reader = BagReader(path)
    if reader.damaged is not None:
        raise ValueError(f"demo sample {path} is a damaged bag ({reader.damaged}); the demo needs a complete one "
                         "(python -m rosbag_tools.play plays what is readable of a damaged bag)")
    missing = [t for t in ("/thermal/image_raw", "/rgb/image_raw")
               if t not in reader.topics and t + "/compressed" not in reader.topics]
    if missing:
        raise ValueError(f"demo sample {path} has no {' or '.join(missing)} (its topics: "
                         f"{', '.join(reader.topics) or 'none'})")


def ros_env(domain_id: int) -> dict[str, str]:
    """The environment of the demo's processes: one private ROS domain on this host, and the Fast DDS profile
    with a shared-memory segment large enough for camera images (config/fastdds_large_images.xml) unless the
    user configured Fast DDS already."""
    env = dict(os.environ)
    env.update(ROS_DOMAIN_ID=str(domain_id), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", PYTHONUNBUFFERED="1",
               YOLO_OFFLINE="1", HF_HUB_OFFLINE="1")
    apply_fastdds_profile(env)
    return env


def _stop(proc: subprocess.Popen, timeout: float = 20.0) -> None:
    """SIGINT (so bags are closed cleanly), then SIGKILL if needed."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _wait_for_line(log: Path, text: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.is_file() and text in log.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[:4]} exited with {proc.returncode}; see {log}")
        time.sleep(0.2)
    raise TimeoutError(f"no '{text}' in {log} after {timeout} s")


def evenly_spaced(items: list, limit: int) -> list:
    """Up to ``limit`` items spread evenly over the whole list, first and last included."""
    if len(items) <= limit:
        return list(items)
    return [items[int(round(x))] for x in np.linspace(0, len(items) - 1, limit)]


def visible_only_counter(input_bag: Path, classes: Sequence[str] = ("person",), limit: int = 60):
    """``extra`` for rosbag_tools.evaluate: the default detector on the visible frames alone, on up to ``limit``
    frames spread evenly over those the graph fused, so fused and visible-only detections of the classes of interest
    compare like for like; adds the report's headline sentence."""

    def count(fused_frames) -> dict:
        from egmt_ros.core.codec import image_to_numpy
        from egmt_ros.detection.detector import Detector
        from rosbag_tools.bagio import BagReader
        from rosbag_tools.evaluate import per_frame_label
        from rosbag_tools.types import deserialize, stamp_ns

        with_boxes = [f for f in fused_frames if f.boxes is not None]
        want = {f.rgb_stamp: f for f in evenly_spaced(with_boxes, limit)}
        det = Detector()
        vis = fused = 0
        for m in BagReader(input_bag).messages(["/rgb/image_raw"]):
            msg = deserialize(m.data, m.msgtype)
            f = want.get(stamp_ns(msg.header))
            if f is None:
                continue
            img = image_to_numpy(msg)
            rgb = np.ascontiguousarray(img[:, :, ::-1]) if img.ndim == 3 and msg.encoding == "bgr8" else img
            vis += sum(1 for d in det.detect(rgb) if d.class_name in classes)
            fused += sum(1 for b in f.boxes if b[0] in classes)
        n = len(want)
        if not n:
            return {"compared_frames": 0, "persons_per_frame_fused": None, "persons_per_frame_visible_only": None}
        what = per_frame_label(classes[0]) if len(classes) == 1 else f"detections of {', '.join(classes)} per frame"
        return {"compared_frames": n, "compared_classes": list(classes),
                "persons_per_frame_fused": fused / n, "persons_per_frame_visible_only": vis / n,
                "headline": f"Fused vs visible only: {fused / n:.2f} vs {vis / n:.2f} {what}, on {n} frames spread "
                            f"evenly over the {len(with_boxes)} fused frames with detections (same detector on "
                            "both)."}

    return count


def describe_run(args: argparse.Namespace, sample: dict) -> list[tuple[str, str]]:
    """The report's "What was run" rows: sample, fusion model and backend, playback rate, hardware, parameters."""
    from egmt_ros.cli.bench_pipeline import cpu_model

    import yaml

    from egmt_ros.paths import package_file

    config = package_file("config/egmt.yaml")
    defaults = yaml.safe_load(config.read_text())["/fusion_node"]["ros__parameters"] if config else {}

    def param(name: str) -> str:
        """The fusion node's parameter as the demo runs it: a -p of the command line, else config/egmt.yaml."""
        return fusion_param(args.param, name) or str(defaults.get(name, "?"))

    if "ir_video" in sample and Path(sample["ir_video"]).stem == DEFAULT_VIDEO:
        what = (f"M2VD {DEFAULT_VIDEO} (default sample): smoke hides the people from the visible camera, the "
                "thermal camera sees them")
    else:
        what = ", ".join(str(v) for v in sample.values())
    model = f"{args.method}" + (" (models/egmt_rt.pt, trained by this project)" if args.method == "egmt_rt" else
                                f" ({param('model.path')})" if args.method == "egmt" else "")
    device = param("model.device")
    hardware = f"{cpu_model()}, {os.cpu_count()} logical cores"
    if device.startswith("cuda"):
        import torch

        hardware += f"; GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "; no GPU found"
    return [("sample", what + (f" (first {args.max_frames} frames)" if args.max_frames else "")),
            ("fusion model", model), ("fusion backend / dtype / device", f"{param('model.backend')} / {param('model.dtype')} / {device}"),
            ("detector", "detection_node defaults (config/egmt.yaml)"),
            ("classes of interest", ", ".join(args.classes)),
            ("playback rate", f"{args.rate:g}x real time (cameras at the sample's frame rate)"),
            ("graph", "fusion_node, entity_node, detection_node: one process each"),
            ("parameters", " ".join(args.param) or "defaults (config/egmt.yaml)"),
            ("hardware", hardware),
            ("date", time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))]


def fusion_param(params: Sequence[str], name: str) -> str | None:
    """The value the last ``-p [fusion_node:]NAME:=VALUE`` of ``params`` gives the fusion node's parameter ``name``
    (they come after the demo's own on the nodes' command line: the last one wins), or None."""
    found = [p.rsplit(":=", 1)[1] for p in params if p.split(":=", 1)[0] in (name, f"fusion_node:{name}")]
    return found[-1] if found else None


def fusion_method(method: str, params: Sequence[str]) -> str:
    """The fusion method the demo's graph runs: ``method`` (``--method``) unless a ``-p`` sets the fusion node's
    ``model.method`` (:func:`fusion_param`)."""
    return fusion_param(params, "model.method") or method


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m egmt_ros.cli.demo", description=__doc__.splitlines()[0])
    ap.add_argument("--sample", default=None, help=f"m2vd video name (default {DEFAULT_VIDEO}), image-pair folder, "
                                                   "rosbag2, or IR.mp4:VI.mp4")
    ap.add_argument("--out", type=Path, default=Path("out/demo"))
    ap.add_argument("--max-frames", type=int, default=None, help="limit the frames taken from the sample")
    ap.add_argument("--rate", type=float, default=1.0, help="playback rate")
    ap.add_argument("--method", default="egmt_rt", help="fusion method (default: the shipped egmt_rt)")
    ap.add_argument("--classes", type=lambda t: [c.strip() for c in t.split(",") if c.strip()], default=["person"],
                    help="detector classes of interest, comma-separated (default person): the headline compares "
                         "them, the report lists the other classes apart")
    ap.add_argument("-p", "--param", action="append", default=[], metavar="[NODE:]NAME:=VALUE",
                    help="a ROS parameter for the graph, as bringup's -p (repeatable), e.g. "
                         "fusion_node:model.backend:=onnxruntime")
    args = ap.parse_args(argv)
    args.method = fusion_method(args.method, args.param)  # the report names what the graph runs
    try:
        sample = resolve_sample(args.sample)
    except (FileNotFoundError, ValueError) as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 2
    try:
        return run_demo(args, sample)
    except (RuntimeError, TimeoutError, OSError, ValueError) as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        return 1


def run_demo(args: argparse.Namespace, sample: dict) -> int:
    """The demo's steps for a resolved ``sample`` (see the module docstring); returns the exit status."""
    out = args.out
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    steps = tqdm(total=5, desc="demo", unit="step", bar_format="{l_bar}{bar}| {n}/{total} {postfix}")
    t_start = time.monotonic()

    steps.set_postfix_str("make_bag")
    if "bag" in sample:
        input_bag = Path(sample["bag"])
    else:
        from rosbag_tools.make_bag import make_bag

        input_bag = out / "input_bag"
        make_bag(input_bag, thermal_encoding="mono16", jitter_ms=2.0, camera_info=True, max_frames=args.max_frames,
                 progress=False, **sample)
    steps.update()

    domain = int(os.environ.get("ROS_DOMAIN_ID") or random.randint(110, 200))
    env = ros_env(domain)
    py = sys.executable
    logs = {k: out / f"{k}.log" for k in ("record", "play", *(f"{n}_node" for n in GRAPH_NODES))}
    procs: list[subprocess.Popen] = []
    try:
        steps.set_postfix_str("starting the graph")
        # One process per node, as ros2 launch starts them: in one process the nodes' Python threads would
        # fight over the GIL (many small torch ops each wait for it: fusion ran 4-5x slower that way).
        for node in GRAPH_NODES:
            procs.append(subprocess.Popen(
                [py, "-m", "egmt_ros.nodes.bringup", "--nodes", node, "--ros-args",
                 "-p", f"fusion_node:model.method:={args.method}", "-p", "use_sim_time:=true",
                 *[a for p in args.param for a in ("-p", p)]],
                stdout=logs[f"{node}_node"].open("w"), stderr=subprocess.STDOUT, env=env))
        record = subprocess.Popen([py, "-m", "rosbag_tools.record", "--topics", *OUTPUT_TOPICS, "--out",
                                   str(out / "output_bag"), "--no-progress"],
                                  stdout=logs["record"].open("w"), stderr=subprocess.STDOUT, env=env)
        procs.append(record)
        _wait_for_line(logs["record"], "subscribed /egmt/fused", record, 180)
        _wait_for_line(logs["record"], "subscribed /egmt/detections", record, 180)
        steps.update()
        steps.set_postfix_str("playing the bag")
        # best effort, like a camera driver; /clock so the nodes run on the bag's time (use_sim_time). The
        # recorder's subscriptions say nothing about the nodes (it sees /egmt/fused as soon as the detection node
        # subscribes it): play once the nodes themselves subscribe, after loading their models (as the launch
        # file does; a bag without camera_info was played before the fusion node had loaded: 0 fused).
        play = subprocess.run([py, "-m", "rosbag_tools.play", str(input_bag), "--rate", str(args.rate), "--qos",
                               "sensor", "--clock", "--wait-for-subscribers", "180", *PLAY_WAIT_FOR,
                               "--no-progress"],
                              stdout=logs["play"].open("w"), stderr=subprocess.STDOUT, env=env)
        if play.returncode != 0:
            raise RuntimeError(f"playing {input_bag} failed; see {logs['play']}")
        steps.update()
        time.sleep(3.0)  # let the graph finish the last frames
        steps.set_postfix_str("recording done")
        _stop(record)
        steps.update()
    finally:
        for p in reversed(procs):
            _stop(p)
    steps.set_postfix_str("evaluating")
    from rosbag_tools.evaluate import evaluate

    summary = evaluate(out / "output_bag", out / "output_bag", out, progress=False,
                       extra=visible_only_counter(input_bag, args.classes), classes=args.classes,
                       title=f"egmt_ros demo: {Path(str(args.sample or DEFAULT_VIDEO)).name}, {args.method}",
                       description=describe_run(args, sample))
    steps.update()
    steps.close()
    report = (out / "report.html").resolve()
    print(f"report: {report}")
    lat = (summary.get("latency_ms") or {}).get("mean")
    fmt = lambda v, d=2: "n/a" if v is None else f"{v:.{d}f}"  # noqa: E731
    print(f"demo: {summary.get('frames_fused')} frames fused of {summary.get('frames_in')} pairs, mean "
          f"receive-to-fused latency {fmt(lat, 0)} ms, persons per frame: fused {fmt(summary.get('persons_per_frame_fused'))}"
          f" vs visible-only {fmt(summary.get('persons_per_frame_visible_only'))} on {summary.get('compared_frames')} "
          f"frames ({time.monotonic() - t_start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
