"""Run-time compiled C kernels of the metrics (Fast-FMI), loaded with ctypes.

A kernel's C source ships next to this module (``_<name>.c``, no Python API). On first use it is compiled with the
system C compiler (``$CC``, else ``cc``, ``gcc``; ``-O3 -march=native``, IEEE arithmetic kept) into a shared library in
the cache folder ``$EGMT_CACHE_DIR`` (default ``$XDG_CACHE_HOME/egmt_ros``, i.e. ``~/.cache/egmt_ros``; the system's
temporary folder if that cannot be written), named by a
digest of the source, the compiler, the flags and the CPU, so later processes load it directly (~0.5 s to compile
once, nothing after). ctypes releases the GIL during the call, so the kernels run on several threads.

``EGMT_METRICS_NATIVE=0`` switches the kernels off. Without a working compiler the metrics run in numpy (same
values, several times slower) and a RuntimeWarning says why, once per process.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
# IEEE arithmetic as numpy's (no fused multiply-adds, no reassociation); only errno and trap semantics are
# relaxed, which lets the compiler vectorise sqrt and speculate divisions without changing any result.
_SAFE = ["-ffp-contract=off", "-fno-math-errno", "-fno-trapping-math"]
_FLAG_SETS = (["-O3", "-march=native", "-mprefer-vector-width=512", *_SAFE], ["-O3", *_SAFE])


_OFF = False  # set inside disabled()


def enabled() -> bool:
    """False inside :func:`disabled` and when ``EGMT_METRICS_NATIVE`` is set to 0 / false / no / off."""
    return not _OFF and os.environ.get("EGMT_METRICS_NATIVE", "1").strip().lower() not in ("0", "false", "no", "off")


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """Inside the block the metrics run in numpy (to compare with the kernels; not thread-safe)."""
    global _OFF
    _OFF = True
    load.cache_clear()
    try:
        yield
    finally:
        _OFF = False
        load.cache_clear()


def cache_dir() -> Path:
    """Where compiled kernels are kept: ``$EGMT_CACHE_DIR``, else ``$XDG_CACHE_HOME/egmt_ros`` (~/.cache/egmt_ros)."""
    if os.environ.get("EGMT_CACHE_DIR"):
        return Path(os.environ["EGMT_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "egmt_ros"


def _compiler() -> str | None:
    cc = os.environ.get("CC")
    return shutil.which(cc) if cc else (shutil.which("cc") or shutil.which("gcc"))


def _cpu_id() -> str:
    """Model and feature flags of this CPU (a -march=native library must not be loaded on another one)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor()
    keep = [ln for ln in lines if ln.startswith(("model name", "flags", "Features", "CPU part"))]
    return "\n".join(sorted(set(keep)))


def _private_tmp() -> Path:
    """``<tmp>/egmt_ros-<uid>``, created 0700; refused (RuntimeError) if someone else owns it or can write to it,
    since the libraries in it are loaded into this process."""
    folder = Path(tempfile.gettempdir()) / f"egmt_ros-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    st = folder.stat()
    if st.st_uid != os.getuid() or st.st_mode & 0o022:
        raise RuntimeError(f"{folder} is not private to this user; set EGMT_CACHE_DIR to a folder of yours")
    return folder


def build(name: str) -> Path:
    """Compile ``_<name>.c`` (if not cached yet) and return the shared library's path.

    Raises RuntimeError naming the compiler and its output when no compiler is found or compilation fails."""
    src = _HERE / f"_{name}.c"
    cc = _compiler()
    if cc is None:
        raise RuntimeError(f"no C compiler found ($CC, cc, gcc) to build {src.name}")
    version = subprocess.run([cc, "--version"], capture_output=True, text=True).stdout
    errors = []
    for flags in _FLAG_SETS:
        digest = hashlib.sha256("\0".join([src.read_text(), cc, version, *flags, _cpu_id()]).encode()).hexdigest()
        lib = cache_dir() / f"{name}-{digest[:16]}.so"
        if lib.exists():
            return lib
        try:
            lib.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(suffix=".so", dir=lib.parent)
        except OSError:  # a read-only home (some CI runners, containers): the system's temporary folder
            lib = _private_tmp() / lib.name
            if lib.exists():
                return lib
            fd, tmp = tempfile.mkstemp(suffix=".so", dir=lib.parent)
        os.close(fd)
        proc = subprocess.run([cc, *flags, "-fPIC", "-shared", "-o", tmp, str(src), "-lm"],
                              capture_output=True, text=True)
        if proc.returncode == 0:
            os.replace(tmp, lib)  # atomic: a concurrent process loads either nothing or the whole library
            return lib
        os.unlink(tmp)
        errors.append(f"{cc} {' '.join(flags)}: {proc.stderr.strip()[-500:]}")
    raise RuntimeError(f"could not compile {src}:\n" + "\n".join(errors))


#: A C function's prototype for ctypes: (name, return type, argument types).
Prototype = tuple[str, Any, tuple[Any, ...]]


@functools.lru_cache(maxsize=None)
def load(name: str, prototypes: tuple[Prototype, ...] = ()) -> ctypes.CDLL | None:
    """The compiled kernel library ``name`` (built on first use) with ``prototypes`` applied to its functions, or
    None when switched off or not buildable (then with a RuntimeWarning, once)."""
    if not enabled():
        return None
    try:
        lib = ctypes.CDLL(str(build(name)))
    except (OSError, RuntimeError) as err:
        warnings.warn(f"egmt_ros.metrics: the C kernel '{name}' is not available, using numpy instead "
                      f"(same values, slower): {err}", RuntimeWarning, stacklevel=2)
        return None
    for func, restype, argtypes in prototypes:
        getattr(lib, func).restype = restype
        getattr(lib, func).argtypes = list(argtypes)
    return lib
