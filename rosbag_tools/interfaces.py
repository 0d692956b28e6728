"""Which message types may be imported: only messages of installed ROS interface packages (no rclpy here).

A bag's metadata, and a remote participant's topic list, name message types as strings. Importing the Python
module such a string names (``this/msg/Image`` -> ``import this.msg``) would run whatever module happens to carry
that name, so ``interface_type`` checks a type string before anything is imported:

1. the form ``pkg/msg/Name`` (package: lower case, digits and ``_``; name: CamelCase letters and digits), as
   rosidl requires, and
2. that ``pkg`` is an installed ROS interface package that defines ``Name``: under one of the install prefixes
   (``AMENT_PREFIX_PATH``, plus ``sys.prefix`` where the ROS pip wheels install), its ament resource index
   lists ``msg/Name`` (``share/ament_index/resource_index/rosidl_interfaces/<pkg>``), or the package is registered
   (``.../resource_index/packages/<pkg>``) and installs the definition ``share/<pkg>/msg/Name.msg`` or ``.idl``.

Anything else raises ``UnknownMessageType`` (a ValueError) with a one-line reason.
"""

from __future__ import annotations

import os
import re
import sys
from functools import lru_cache
from pathlib import Path

#: ``pkg/msg/Name`` as rosidl names messages.
TYPE_PATTERN = re.compile(r"^([a-z][a-z0-9_]*)/msg/([A-Z][A-Za-z0-9]*)$")
INDEX = Path("share", "ament_index", "resource_index")


class UnknownMessageType(ValueError):
    """A message type string that is malformed or not a message of an installed ROS interface package."""


def prefixes() -> list[Path]:
    """Install prefixes searched for interface packages: ``AMENT_PREFIX_PATH`` in order, then ``sys.prefix``."""
    paths = [Path(p) for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    return paths + [Path(sys.prefix)]


@lru_cache(maxsize=256)
def _defined(prefix: Path, pkg: str, name: str) -> bool:
    """Whether the install prefix ``prefix`` holds the message ``pkg/msg/name`` of an interface package."""
    index = prefix / INDEX
    listed = index / "rosidl_interfaces" / pkg
    try:
        if listed.is_file() and {f"msg/{name}.msg", f"msg/{name}.idl"} & set(listed.read_text().split()):
            return True
    except OSError:
        return False
    share = prefix / "share" / pkg / "msg"
    return (index / "packages" / pkg).is_file() and any((share / f"{name}{ext}").is_file() for ext in (".msg", ".idl"))


def interface_type(msgtype: str) -> tuple[str, str]:
    """``(package, name)`` of ``msgtype`` when it is a message of an installed ROS interface package.

    Raises UnknownMessageType otherwise; nothing is imported either way.
    """
    m = TYPE_PATTERN.match(msgtype) if isinstance(msgtype, str) else None
    if m is None:
        raise UnknownMessageType(f"message type {str(msgtype)[:80]!r} is not of the form pkg/msg/Name")
    pkg, name = m.groups()
    if not any(_defined(p, pkg, name) for p in prefixes()):
        raise UnknownMessageType(f"message type {msgtype} is not a message of an installed ROS interface package "
                                 "(not in the ament index of AMENT_PREFIX_PATH); it is not imported")
    return pkg, name
