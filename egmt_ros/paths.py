"""Where egmt_ros finds things: the data root, the repository's shipped models, the package share."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR: Path = Path(__file__).resolve().parent
#: The source checkout's root when running from a checkout or an editable install (None when installed elsewhere).
REPO_ROOT: Path | None = PACKAGE_DIR.parent if (PACKAGE_DIR.parent / "package.xml").is_file() else None

DEFAULT_DATA_ROOT = "../shared/data"


def data_root(must_exist: bool = False) -> Path:
    """The data root: ``$EGMT_DATA``, else ``../shared/data`` relative to the working directory,
    else relative to the source checkout.

    With ``must_exist`` a missing root raises FileNotFoundError naming every place that was looked at.
    """
    env = os.environ.get("EGMT_DATA")
    candidates = [Path(env)] if env else [Path(DEFAULT_DATA_ROOT)]
    if not env and REPO_ROOT is not None:
        candidates.append(REPO_ROOT / DEFAULT_DATA_ROOT)
    for c in candidates:
        if c.is_dir():
            return c.resolve()
    if must_exist:
        looked = ", ".join(str(c.resolve()) for c in candidates)
        raise FileNotFoundError(
            f"egmt_ros data root not found (looked at: {looked}). "
            "Set EGMT_DATA to the folder that holds tno42/, roadscene/, m2vd/, weights/ ...")
    return candidates[0].resolve()


def shown_path(path: str | Path) -> str:
    """``path`` as reports write it: ``$EGMT_DATA/...`` inside the data root, relative to the working directory
    inside it, else as given (so committed reports name no machine's absolute paths)."""
    p = Path(path).resolve()
    root = data_root()
    for base, prefix in ((root, "$EGMT_DATA"), (Path.cwd().resolve(), ".")):
        if p == base or base in p.parents:
            return str(Path(prefix) / p.relative_to(base))
    return str(path)


def models_dir() -> Path:
    """Folder of the shipped weights: ``models/`` of the checkout, else ``share/egmt_ros/models`` of the install."""
    if REPO_ROOT is not None and (REPO_ROOT / "models").is_dir():
        return REPO_ROOT / "models"
    try:
        from ament_index_python.packages import get_package_share_directory  # type: ignore

        return Path(get_package_share_directory("egmt_ros")) / "models"
    except Exception:  # noqa: BLE001 - ament index missing outside a ROS environment
        return PACKAGE_DIR.parent / "models"


def package_file(relative: str) -> Path | None:
    """A file shipped with the package (e.g. ``config/egmt.yaml``): the checkout's, else the installed package
    share's; None if neither exists."""
    if REPO_ROOT is not None and (REPO_ROOT / relative).is_file():
        return REPO_ROOT / relative
    try:
        from ament_index_python.packages import get_package_share_directory  # type: ignore

        p = Path(get_package_share_directory("egmt_ros")) / relative
        return p if p.is_file() else None
    except Exception:  # noqa: BLE001 - package not on the ament index
        return None
