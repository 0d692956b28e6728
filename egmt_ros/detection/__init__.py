"""egmt_ros.detection: the YOLO detector wrapper, COCO -> M3FD class map, detection datasets, training and mAP.

Importing this package prepares ultralytics for offline use before anything imports it (``YOLO_OFFLINE=1`` unless
set, ``YOLO_CONFIG_DIR`` with a bundled font; see :mod:`egmt_ros.detection.ultralytics_env`), so every entry point
(CLIs, nodes, tests) behaves the same and never downloads fonts, weights or assets. ultralytics itself is imported
only when a detector is built.
"""

from egmt_ros.detection.ultralytics_env import prepare_ultralytics

prepare_ultralytics()
