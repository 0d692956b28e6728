"""Write the entity-annotated version of IR/VI pair folders (the EGMT paper's entity annotations), resumably.

    python -m egmt_ros.cli.annotate --data DIR [DIR ...] --out FILE [--source detector|caption|vocabulary]
        [--captioner ID] [--extractor ID] [--vocabulary w1,w2] [--classes c1,c2,...]

One record per pair; the file format is documented in docs/entities.md. Records already in ``--out`` are skipped
(the file is rewritten atomically every ``--save-every`` new records and at the end), so an interrupted run resumes.
At the end the per-stage latencies (median and p90 ms) are printed to stderr.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from egmt_ros.model.loading import ensure_offline

ensure_offline()

from egmt_ros.core.classes import DEFAULT_CLASSES, multi_hot, parse_class_list  # noqa: E402
from egmt_ros.core.images import list_pairs, load_pair  # noqa: E402
from egmt_ros.detection.detector import UntrustedWeightsError, add_trust_argument  # noqa: E402
from egmt_ros.entities.sources import MODALITIES, SOURCES, EntitySet  # noqa: E402
from egmt_ros.entities.timing import StageTimes  # noqa: E402
from egmt_ros.model.config import MINILM_ID  # noqa: E402
from egmt_ros.paths import data_root  # noqa: E402

#: The detectors ``--source detector`` pools by default (under the data root): YOLO11n and YOLOv8n, COCO,
#: INT8 OpenVINO. Together they find people in more TNO scenes than either alone (docs/entities.md).
DEFAULT_ANNOTATION_DETECTORS = (Path("weights") / "yolo11n_int8_openvino_model",
                                Path("weights") / "yolov8n_int8_openvino_model")

FORMAT_VERSION = 1


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(prog="python -m egmt_ros.cli.annotate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", nargs="+", required=True, help="pair folders (each with ir/ and vi/)")
    p.add_argument("--out", required=True, help="annotation JSON file (created, or resumed when it exists)")
    p.add_argument("--source", choices=SOURCES, default="detector",
                   help="detector: detector classes on VI and IR (default, works offline); caption: BLIP-2 "
                        "captions + entity extractor; vocabulary: the --vocabulary words only")
    p.add_argument("--captioner", help="BLIP-2 model id (in the HF cache) or local folder (--source caption)")
    p.add_argument("--prompt", default="", help="captioner prompt (default: none)")
    p.add_argument("--extractor", help="Flan-T5 model id or folder; default: the rule-based extractor")
    p.add_argument("--max-new-tokens", type=int, default=30, help="caption length limit")
    p.add_argument("--num-beams", type=int, default=3, help="caption beam width")
    p.add_argument("--vocabulary", help="comma-separated entities added to every record (source 'vocabulary')")
    p.add_argument("--vocabulary-score", type=float, default=1.0, help="score of vocabulary entities")
    p.add_argument("--classes", help="comma-separated multi-label classes (default: DEFAULT_CLASSES, "
                                     + ", ".join(DEFAULT_CLASSES) + ")")
    p.add_argument("--detector-weights", nargs="+", metavar="WEIGHTS",
                   help="detector weights, one or more (several: an ensemble, detections pooled; default: "
                        "YOLO11n and YOLOv8n under the data root, weights/yolo11n_int8_openvino_model and "
                        "weights/yolov8n_int8_openvino_model)")
    add_trust_argument(p)
    p.add_argument("--conf", type=float, default=0.25, help="detector confidence threshold")
    p.add_argument("--modalities", default="vi,ir,ir_inverted,fused",
                   help=f"images the detector sees (--source detector): any of {', '.join(MODALITIES)} "
                        "(comma-separated; ir_inverted = the IR image black-hot)")
    p.add_argument("--tiles", type=int, default=2, help="--source detector: also detect on an N x N grid of "
                                                        "overlapping tiles (small, distant objects); 1 = whole image only")
    p.add_argument("--all-detector-classes", action="store_true",
                   help="--source detector: every class the detector knows becomes an entity (default: only the "
                        "multi-label classes of --classes)")
    p.add_argument("--fusion", default="egmt_rt", help="fusion method that makes the 'fused' image (default: the "
                                                       "shipped egmt_rt)")
    p.add_argument("--text-encoder", default=MINILM_ID, help="text encoder whose latency is measured and whose id "
                                                             "is written as text_encoder")
    p.add_argument("--max-entities", type=int, default=8, help="entities per record")
    p.add_argument("--max-pairs", type=int, help="only the first N pairs (by name) of each --data folder")
    p.add_argument("--save-every", type=int, default=20, help="rewrite the output every N new records")
    p.add_argument("--device", default="cpu", help="torch device of the caption/extractor models")
    p.add_argument("--dtype", default="float32", help="float32 | float16 | bfloat16 (caption/extractor models)")
    return p


def load_existing(path: Path, classes: list[str]) -> list[dict[str, Any]]:
    """Records of an existing annotation file (none when it does not exist).

    Raises ValueError when the file is not a version-1 annotation file or was written with other classes.
    """
    if not path.is_file():
        return []
    doc = json.loads(path.read_text())
    if not isinstance(doc, dict) or doc.get("version") != FORMAT_VERSION or "records" not in doc:
        raise ValueError(f"{path} is not a version-{FORMAT_VERSION} egmt_ros annotation file")
    if doc.get("classes") != classes:
        raise ValueError(f"{path} was written with classes {doc.get('classes')}, not {classes}: "
                         "use the same --classes to resume, or another --out")
    return list(doc["records"])


def write_atomic(path: Path, doc: dict[str, Any]) -> None:
    """Write JSON to ``path`` through a temporary file in the same folder and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    os.replace(tmp, path)


def make_record(name: str, dataset: str, ir_rel: str, vi_rel: str, ents: EntitySet,
                classes: Sequence[str]) -> dict[str, Any]:
    """One annotation record (the file format of docs/entities.md)."""
    return {"name": name, "dataset": dataset, "ir": ir_rel, "vi": vi_rel,
            "captions": {"ir": ents.captions.get("ir"), "vi": ents.captions.get("vi")},
            "entities": [e.to_dict() for e in ents.entities],
            "labels": multi_hot(ents.texts, classes)}


def _modalities(args: argparse.Namespace) -> tuple[str, ...]:
    return tuple(m.strip() for m in args.modalities.split(",") if m.strip())


def fused_maker(args: argparse.Namespace) -> Callable[[np.ndarray, np.ndarray], np.ndarray] | None:
    """``(ir, vi) -> fused`` with ``--fusion`` when the detector is to see the fused image, else None."""
    if args.source != "detector" or "fused" not in _modalities(args):
        return None
    from egmt_ros.fusion.engine import fuse_images
    from egmt_ros.fusion.methods import get_method

    method = get_method(args.fusion)
    return lambda ir, vi: fuse_images(method, ir, vi)


def build_source(args: argparse.Namespace) -> Any:
    """The entity source the arguments ask for (models are loaded here)."""
    from egmt_ros.entities import sources

    if args.source == "vocabulary":
        if not args.vocabulary:
            raise SystemExit("--source vocabulary needs --vocabulary w1,w2,...")
        return sources.VocabularyEntitySource(args.vocabulary, args.vocabulary_score)
    if args.source == "detector":
        return sources.DetectorEntitySource(modalities=_modalities(args), vocabulary=args.vocabulary,
                                            vocabulary_score=args.vocabulary_score,
                                            max_entities=args.max_entities,
                                            weights=args.detector_weights or [
                                                str(data_root() / p) for p in DEFAULT_ANNOTATION_DETECTORS],
                                            conf=args.conf, tiles=args.tiles, trust_pickle=args.weights_trust_pickle,
                                            classes=None if args.all_detector_classes else
                                            parse_class_list(args.classes))
    if not args.captioner:
        raise SystemExit("--source caption needs --captioner (a BLIP-2 model id in the HF cache or a local folder)")
    from egmt_ros.entities.captioner import Blip2Captioner
    from egmt_ros.entities.extractor import get_extractor

    captioner = Blip2Captioner(args.captioner, prompt=args.prompt, max_new_tokens=args.max_new_tokens,
                               num_beams=args.num_beams, device=args.device, dtype=args.dtype)
    extractor = get_extractor(args.extractor, device=args.device, dtype=args.dtype,
                              max_entities=args.max_entities) if args.extractor else get_extractor(
        None, max_entities=args.max_entities)
    return sources.CaptionEntitySource(captioner, extractor, max_entities=args.max_entities,
                                       vocabulary=args.vocabulary, vocabulary_score=args.vocabulary_score)


def main(argv: Sequence[str] | None = None) -> int:
    """Annotate the pair folders; returns 0 on success."""
    from tqdm import tqdm

    from egmt_ros.model.text import get_text_encoder

    args = build_parser().parse_args(argv)
    classes = parse_class_list(args.classes)
    out_path = Path(args.out)

    datasets: list[tuple[Path, str]] = []
    for d in args.data:
        folder = Path(d).resolve()
        if folder.name in [n for _, n in datasets]:
            raise SystemExit(f"two --data folders are named {folder.name!r}; record keys (dataset, name) would clash")
        datasets.append((folder, folder.name))

    records = load_existing(out_path, classes)
    done = {(r["dataset"], r["name"]) for r in records}
    todo: list[tuple[Path, str, str, Path, Path]] = []
    n_pairs = 0
    for folder, dname in datasets:
        pairs = list_pairs(folder)
        if args.max_pairs is not None:
            pairs = pairs[: args.max_pairs]
        n_pairs += len(pairs)
        todo += [(folder, dname, stem, ir, vi) for stem, ir, vi in pairs if (dname, stem) not in done]
    print(f"annotate: {n_pairs} pairs, {n_pairs - len(todo)} already in {out_path}, {len(todo)} to do "
          f"(source: {args.source})", file=sys.stderr)

    times = StageTimes()
    doc: dict[str, Any] = {"version": FORMAT_VERSION, "classes": classes, "text_encoder": args.text_encoder,
                           "records": records}
    order = {n: i for i, (_, n) in enumerate(datasets)}

    def save() -> None:
        doc["records"].sort(key=lambda r: (order.get(r["dataset"], len(order)), r["dataset"], r["name"]))
        write_atomic(out_path, doc)

    if not todo:
        if not out_path.is_file():
            save()
        print(f"annotate: nothing new; {len(records)} records in {out_path}", file=sys.stderr)
        return 0

    t0 = time.perf_counter()
    try:
        source = build_source(args)
        fuse = fused_maker(args)
        encoder = get_text_encoder(args.text_encoder)
    except (FileNotFoundError, UntrustedWeightsError) as exc:  # missing or pickled weights: the message says why
        raise SystemExit(f"annotate: {exc}") from exc
    doc["text_encoder"] = str(getattr(encoder, "id", args.text_encoder))
    # the "encode" stage is timed without the label cache (the cost of a new label); the nodes cache by label
    if "use_cache" in inspect.signature(encoder.encode).parameters:
        def encode_uncached(texts: list[str]) -> Any:
            return encoder.encode(texts, use_cache=False)
    elif hasattr(encoder, "_encode_new"):  # an encoder without use_cache: its hook for new labels
        encode_uncached = encoder._encode_new  # noqa: SLF001
    else:
        encode_uncached = encoder.encode
    uncached = encode_uncached is not encoder.encode
    print(f"annotate: models loaded in {time.perf_counter() - t0:.1f} s", file=sys.stderr)

    if args.source == "detector":  # the first inference compiles/warms the model: keep it out of the latencies
        ir0, vi0 = load_pair(todo[0][3], todo[0][4])
        source.extract(ir0, vi0, 0.0, fused=fuse(ir0, vi0) if fuse else None)

    new = 0
    try:
        for folder, dname, stem, ir_path, vi_path in tqdm(todo, desc="annotate", unit="pair", file=sys.stderr):
            ir, vi = load_pair(ir_path, vi_path)
            fused = None
            if fuse is not None:
                with times.time("fuse"):
                    fused = fuse(ir, vi)
            ents = source.extract(ir, vi, stamp=0.0, fused=fused)
            times.add_all(source.last_timings)
            if ents.texts:
                with times.time("encode"):
                    encode_uncached(ents.texts)
            doc["records"].append(make_record(stem, dname, ir_path.relative_to(folder).as_posix(),
                                              vi_path.relative_to(folder).as_posix(), ents, classes))
            new += 1
            if new % max(1, args.save_every) == 0:
                save()
    finally:
        save()

    with_ents = sum(1 for r in doc["records"] if r["entities"])
    print(f"annotate: {new} new records, {len(doc['records'])} in {out_path} "
          f"({with_ents} with at least one entity)", file=sys.stderr)
    print("per-stage latency (ms" + (", encode uncached" if uncached else "") + "):", file=sys.stderr)
    print(times.table(), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
