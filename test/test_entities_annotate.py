"""The annotation CLI on real MSRS pairs: records, labels, resumability, latency report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from egmt_ros.cli.annotate import main
from egmt_ros.core.classes import DEFAULT_CLASSES
from egmt_ros.model.config import MINILM_ID


def test_annotate_detector_source_resumable(data_root: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    data = data_root / "msrs_train5"
    out = tmp_path / "ann" / "msrs.json"
    args = ["--data", str(data), "--out", str(out), "--source", "detector", "--vocabulary", "street",
            "--max-pairs", "3", "--save-every", "2"]
    assert main(args) == 0
    err = capsys.readouterr().err
    doc = json.loads(out.read_text())
    assert doc["version"] == 1 and doc["classes"] == DEFAULT_CLASSES and doc["text_encoder"] == MINILM_ID
    recs = doc["records"]
    assert [r["name"] for r in recs] == ["00001D", "00556D", "00633D"]
    for r in recs:
        assert set(r) == {"name", "dataset", "ir", "vi", "captions", "entities", "labels"}
        assert r["dataset"] == "msrs_train5" and r["ir"] == f"ir/{r['name']}.png" and r["vi"] == f"vi/{r['name']}.png"
        assert (data / r["ir"]).is_file() and (data / r["vi"]).is_file()
        assert r["captions"] == {"ir": None, "vi": None}
        assert len(r["labels"]) == len(DEFAULT_CLASSES) and set(r["labels"]) <= {0, 1}
        texts = [e["text"] for e in r["entities"]]
        assert texts[-1] == "street" and r["entities"][-1] == {"text": "street", "source": "vocabulary",
                                                                "score": 1.0}
        for e in r["entities"][:-1]:
            assert e["source"] == "detector" and 0.25 <= e["score"] <= 1.0
        # labels are the multi-hot of the entities over the classes
        assert r["labels"] == [1 if c in texts else 0 for c in DEFAULT_CLASSES]
    people = recs[2]  # 00633D has people (MSRS detection labels: class 0 boxes)
    assert people["entities"][0]["text"] == "person" and people["labels"][0] == 1
    # per-stage latency table on stderr
    assert "per-stage latency" in err
    rows = {line.split()[0]: line.split() for line in err.splitlines() if line.split()[:1] in (["detect"],
                                                                                              ["encode"])}
    assert int(rows["detect"][1]) == 3 and float(rows["detect"][2]) > 0 and float(rows["detect"][3]) > 0
    assert int(rows["encode"][1]) == 3
    assert "3 new records" in err

    # second run: nothing new, file unchanged
    before = out.read_text()
    assert main(args) == 0
    err2 = capsys.readouterr().err
    assert "0 to do" in err2 and "nothing new" in err2
    assert out.read_text() == before

    # a larger run only adds the missing pairs
    assert main(args[:-4] + ["--max-pairs", "4"]) == 0
    err3 = capsys.readouterr().err
    assert "1 new records" in err3
    recs4 = json.loads(out.read_text())["records"]
    assert [r["name"] for r in recs4] == ["00001D", "00556D", "00633D", "00881N"]
    assert recs4[:3] == recs

    # resuming with other classes is refused (labels would not match)
    with pytest.raises(ValueError, match="classes"):
        main(args + ["--classes", "person,car"])


def test_annotate_vocabulary_source_and_classes(data_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "voc.json"
    assert main(["--data", str(data_root / "msrs_train5"), "--out", str(out), "--source", "vocabulary",
                 "--vocabulary", "pedestrians,road", "--classes", "person,road,car", "--max-pairs", "2"]) == 0
    doc = json.loads(out.read_text())
    assert doc["classes"] == ["person", "road", "car"]
    assert len(doc["records"]) == 2
    for r in doc["records"]:
        assert [e["text"] for e in r["entities"]] == ["pedestrian", "road"]
        assert r["labels"] == [1, 1, 0]  # "pedestrian" counts as person
    with pytest.raises(SystemExit):
        main(["--data", str(data_root / "msrs_train5"), "--out", str(tmp_path / "x.json"), "--source", "vocabulary"])


def test_annotate_missing_detector_weights_names_the_path(data_root: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A data root without the second default detector (YOLOv8n): a one-line error naming the folder looked
    for, and no output file."""
    (tmp_path / "root" / "weights").mkdir(parents=True)
    (tmp_path / "root" / "weights" / "yolo11n_int8_openvino_model").symlink_to(
        data_root / "weights" / "yolo11n_int8_openvino_model")
    monkeypatch.setenv("EGMT_DATA", str(tmp_path / "root"))
    out = tmp_path / "ann.json"
    with pytest.raises(SystemExit) as exc:
        main(["--data", str(data_root / "msrs_train5"), "--out", str(out), "--max-pairs", "1"])
    assert "annotate:" in str(exc.value)
    assert str(tmp_path / "root" / "weights" / "yolov8n_int8_openvino_model") in str(exc.value)
    assert not out.exists()


def test_annotate_refuses_a_crafted_pt_without_running_it(data_root: Path, tmp_path: Path) -> None:
    """--detector-weights x.pt without --weights-trust-pickle: a one-line error saying how to load weights safely,
    and the pickle's code never runs."""
    from crafted import write_crafted_pt

    marker = tmp_path / "pwned"
    crafted = write_crafted_pt(tmp_path / "detector.pt", marker)
    with pytest.raises(SystemExit) as exc:
        main(["--data", str(data_root / "msrs_train5"), "--out", str(tmp_path / "ann.json"), "--max-pairs", "1",
              "--detector-weights", str(crafted)])
    assert "annotate:" in str(exc.value) and "format=openvino" in str(exc.value)
    assert "--weights-trust-pickle" in str(exc.value) and not marker.exists()
