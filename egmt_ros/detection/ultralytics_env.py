"""Make ultralytics work offline: no downloads of fonts, weights or assets, from every egmt_ros entry point.

Call :func:`prepare_ultralytics` (or :func:`import_yolo`) before anything imports ``ultralytics``. It

- sets ``YOLO_OFFLINE=1`` unless the variable is already set (set ``YOLO_OFFLINE=0`` yourself on a machine with
  internet to let ultralytics fetch its standard weights such as ``yolo11n.pt``);
- points ``YOLO_CONFIG_DIR`` at ``$XDG_CACHE_HOME/egmt_ros/ultralytics`` (default ``~/.cache/...``, a temp folder
  if that is not writable) unless it is already set;
- copies a TTF that ships in a pip package (matplotlib's DejaVuSans) to ``$YOLO_CONFIG_DIR/Ultralytics/Arial.ttf``
  (and ``Arial.Unicode.ttf``), the files ultralytics' plotting would otherwise download.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

#: Font files ultralytics looks for in its config dir (``ultralytics.utils.checks.check_font``).
ULTRALYTICS_FONTS = ("Arial.ttf", "Arial.Unicode.ttf")
_TRUE = {"1", "true", "yes", "on", "y", "t"}


def is_offline() -> bool:
    """True when ``YOLO_OFFLINE`` is set to a true value (the egmt_ros default, see :func:`prepare_ultralytics`)."""
    return os.environ.get("YOLO_OFFLINE", "").strip().lower() in _TRUE


def bundled_font() -> Path | None:
    """A TTF shipped inside an installed pip package (matplotlib's DejaVuSans.ttf), or None."""
    spec = importlib.util.find_spec("matplotlib")
    if spec is None or not spec.submodule_search_locations:
        return None
    for base in spec.submodule_search_locations:
        font = Path(base) / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"
        if font.is_file():
            return font
    return None


def _default_config_dir() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    cand = cache / "egmt_ros" / "ultralytics"
    try:
        cand.mkdir(parents=True, exist_ok=True)
        return cand
    except OSError:
        return Path(tempfile.gettempdir()) / f"egmt_ros-ultralytics-{os.getuid()}"


def prepare_ultralytics() -> Path:
    """Set the offline environment and install the font; returns ultralytics' user config dir (``.../Ultralytics``).

    Safe to call many times. If ultralytics was already imported, the font goes to the config dir it chose.
    """
    os.environ.setdefault("YOLO_OFFLINE", "1")
    if "YOLO_CONFIG_DIR" not in os.environ:
        os.environ["YOLO_CONFIG_DIR"] = str(_default_config_dir())
    utils = sys.modules.get("ultralytics.utils")
    if utils is not None and hasattr(utils, "USER_CONFIG_DIR"):
        config = Path(utils.USER_CONFIG_DIR)
    else:
        config = Path(os.environ["YOLO_CONFIG_DIR"]).expanduser() / "Ultralytics"
    config.mkdir(parents=True, exist_ok=True)
    missing = [name for name in ULTRALYTICS_FONTS if not (config / name).is_file()]
    if missing:
        font = bundled_font()
        if font is None:
            warnings.warn("no bundled TTF found (matplotlib missing); ultralytics plots may try to download "
                          f"Arial.ttf into {config}", RuntimeWarning, stacklevel=2)
        else:
            for name in missing:
                tmp = config / f".{name}.{os.getpid()}.tmp"
                shutil.copyfile(font, tmp)
                os.replace(tmp, config / name)  # atomic: parallel processes never see half a font
    return config


def import_yolo():
    """``ultralytics.YOLO`` after :func:`prepare_ultralytics`."""
    prepare_ultralytics()
    from ultralytics import YOLO

    return YOLO
