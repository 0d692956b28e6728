"""The ROS environment a node process needs, set up from inside Python so that ``.venv/bin/python -m
egmt_ros.nodes.bringup`` works without sourcing anything:

- vision_msgs: used as installed (apt on a robot); where it is not importable and the checkout has the CI stand-in
  built by ``scripts/build_test_interfaces.sh`` (``install_interfaces/``), that one is made importable.
- Fast DDS: the large-image profile ``config/fastdds_large_images.xml`` (32 MiB shared-memory segment + UDPv4),
  unless the user configured Fast DDS (one of :data:`PROFILE_VARIABLES` set): the rule of launch/fusion.launch.py.

Both must run before ``rclpy.init`` (the profile is read when the participant is made).
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import sys
from collections.abc import MutableMapping
from pathlib import Path

from egmt_ros.paths import REPO_ROOT, package_file

#: Variables by which a user chooses Fast DDS's transports; when one is set the profile is left out.
PROFILE_VARIABLES = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_BUILTIN_TRANSPORTS")

_loaded: set[Path] = set()


def prepend_path(value: str | None, *paths: str | Path) -> str:
    """``paths`` (those not in it yet) put in front of the search path ``value`` (os.pathsep-separated)."""
    parts = [p for p in (value or "").split(os.pathsep) if p]
    return os.pathsep.join([str(p) for p in paths if str(p) not in parts] + parts)


def interfaces_site(prefix: Path) -> Path:
    """The Python site-packages folder of a colcon (merged) install prefix."""
    return prefix / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"


def use_interfaces(prefix: Path) -> bool:
    """Make the interface packages installed under ``prefix`` usable in this (already running) process; False when
    ``prefix`` has none.

    Adds its site-packages to ``sys.path`` and the prefix / its lib to ``AMENT_PREFIX_PATH`` / ``LD_LIBRARY_PATH``
    in ``os.environ`` (inherited by child processes), and preloads its libraries: the dynamic loader read
    LD_LIBRARY_PATH at process start, and the rosidl type support dispatch ``dlopen``s
    ``lib<pkg>__rosidl_typesupport_fastrtps_c.so`` by bare name, which only succeeds for a library that is already
    loaded (or on the start-up search path).
    """
    prefix = prefix.absolute()
    site, lib = interfaces_site(prefix), prefix / "lib"
    if not site.is_dir():
        return False
    if prefix in _loaded:
        return True
    if str(site) not in sys.path:
        sys.path.insert(0, str(site))
    os.environ["AMENT_PREFIX_PATH"] = prepend_path(os.environ.get("AMENT_PREFIX_PATH"), prefix, sys.prefix)
    started_with_lib = str(lib) in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep)
    os.environ["LD_LIBRARY_PATH"] = prepend_path(os.environ.get("LD_LIBRARY_PATH"), lib)
    if not started_with_lib:
        for so in sorted(lib.glob("lib*.so")):
            ctypes.CDLL(str(so), mode=ctypes.RTLD_GLOBAL)  # their own RUNPATH finds their siblings
    _loaded.add(prefix)
    return True


def ensure_vision_msgs() -> None:
    """Nothing when vision_msgs is importable; else the checkout's CI stand-in (``install_interfaces/``) when built.
    Without either, the nodes' first use of vision_msgs names the package to install."""
    if importlib.util.find_spec("vision_msgs") is None and REPO_ROOT is not None:
        use_interfaces(REPO_ROOT / "install_interfaces")


def apply_fastdds_profile(env: MutableMapping[str, str] = os.environ) -> str | None:
    """Set ``FASTDDS_DEFAULT_PROFILES_FILE`` in ``env`` to the large-image profile unless one of
    :data:`PROFILE_VARIABLES` is set already; returns the profile set (None: left alone, or not found)."""
    if any(k in env for k in PROFILE_VARIABLES):
        return None
    profile = package_file("config/fastdds_large_images.xml")
    if profile is None:
        return None
    env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(profile)
    return str(profile)


def prepare_process() -> None:
    """Everything above, for a node process about to call ``rclpy.init``."""
    ensure_vision_msgs()
    apply_fastdds_profile()
