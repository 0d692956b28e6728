"""Class maps between the COCO classes of the stock YOLO detectors and the M3FD detection classes.

M3FD (TarDAL, CVPR 2022) labels six classes; the EGMT paper's Table VI reports them in this order:
People, Car, Bus, Lamp, Motorcycle, Truck. Five have a COCO counterpart. **Lamp has none** (COCO's 80 classes hold
"traffic light" but no street lamp), so a COCO detector cannot report it: tables mark it "n/a", never 0 and never an
invented stand-in.
"""

from __future__ import annotations

#: M3FD class names in the order of the EGMT paper's Table VI (the default ids 0..5 of YOLO txt labels).
M3FD_CLASSES: tuple[str, ...] = ("People", "Car", "Bus", "Lamp", "Motorcycle", "Truck")

#: COCO class name -> M3FD class name.
COCO_TO_M3FD: dict[str, str] = {
    "person": "People",
    "car": "Car",
    "bus": "Bus",
    "motorcycle": "Motorcycle",
    "truck": "Truck",
}

#: M3FD classes without a COCO counterpart, with the reason shown in tables and logs.
M3FD_UNMAPPED: dict[str, str] = {"Lamp": "no COCO class (COCO has 'traffic light' but no street lamp)"}


def _norm(name: str) -> str:
    return name.strip().lower()


def class_mapping(detector_names: list[str], dataset_names: list[str]) -> tuple[dict[int, int], dict[int, str]]:
    """Map detector class ids to dataset class ids.

    A dataset class takes the detector class of the same name (case-insensitive); failing that, the detector class
    whose COCO name maps to it through :data:`COCO_TO_M3FD` (so a COCO model can be scored on M3FD labels).

    Returns ``(det_to_data, unmapped)``: detector id -> dataset id, and dataset id -> reason for every dataset class
    no detector class can produce (detections of unmapped detector classes are simply dropped).
    """
    det_by_name = {_norm(n): i for i, n in enumerate(detector_names)}
    m3fd_to_coco = {_norm(m): c for c, m in COCO_TO_M3FD.items()}
    det_to_data: dict[int, int] = {}
    unmapped: dict[int, str] = {}
    for data_id, name in enumerate(dataset_names):
        key = _norm(name)
        det_id = det_by_name.get(key)
        if det_id is None and key in m3fd_to_coco:
            det_id = det_by_name.get(m3fd_to_coco[key])
        if det_id is None:
            reason = next((r for m, r in M3FD_UNMAPPED.items() if _norm(m) == key), None)
            unmapped[data_id] = reason or "the detector has no class of this name"
        elif det_id not in det_to_data:
            det_to_data[det_id] = data_id
    return det_to_data, unmapped


def to_m3fd(coco_name: str) -> str | None:
    """The M3FD name of a COCO class name, or None when it is not one of M3FD's classes."""
    return COCO_TO_M3FD.get(_norm(coco_name))
