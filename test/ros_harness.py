"""Helpers and pytest fixtures for ROS tests with real middleware in separate processes.

Each test gets its own ROS domain id, leased with a file lock so that parallel pytest processes on this machine
(xdist workers, two ``colcon test`` runs, other developers' runs) never share one; discovery stays on this host
(``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``) and Fast DDS uses the package's profile
``config/fastdds_large_images.xml`` (32 MiB shared-memory segment + UDPv4) so best-effort 640x512 bgr8 images arrive.
Processes started with :func:`spawn` run in their own process group and are killed (group and all) at teardown,
also when the test fails. The test process talks ROS through a fresh rclpy context per test.

Fixtures (registered in test/conftest.py):
  ``ros_domain``       a :class:`RosDomain` (``domain_id``, ``env``); sets the ROS variables in ``os.environ`` and
                       restores them afterwards.
  ``process_tracker``  the :class:`ProcessTracker` of the test; ``spawn`` is its ``spawn`` method.
  ``ros_context``      an initialised ``rclpy.Context`` on the test's domain, shut down afterwards.
  ``ros_node``         a node in that context, destroyed afterwards.

When ``install_interfaces/`` exists (``scripts/build_test_interfaces.sh``: the vision_msgs stand-in),
:func:`use_test_interfaces` makes its messages importable in the test process and :func:`ros_env` passes its paths to
spawned processes.
"""

from __future__ import annotations

import fcntl
import itertools
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest

from egmt_ros.nodes.environment import prepend_path, interfaces_site, use_interfaces

TEST_DIR: Path = Path(__file__).resolve().parent
REPO_ROOT: Path = TEST_DIR.parent
HELPERS_DIR: Path = TEST_DIR / "helpers"
#: Install base of scripts/build_test_interfaces.sh (merged layout).
INTERFACES_INSTALL: Path = REPO_ROOT / "install_interfaces"
#: Domain ids handed out (0 is left to whatever else runs on the machine; > 101 collides with ephemeral ports).
DOMAIN_MIN, DOMAIN_MAX = 1, 101
#: Where the per-domain lock files live (shared by every process of this user on the machine).
LOCK_DIR: Path = Path(tempfile.gettempdir()) / f"egmt_ros_domain_locks_{os.getuid()}"
#: Variables :func:`ros_env` sets; ``ros_domain`` restores exactly these in ``os.environ``.
ROS_ENV_KEYS: tuple[str, ...] = (
    "ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_STATIC_PEERS", "ROS_LOCALHOST_ONLY",
    "FASTDDS_BUILTIN_TRANSPORTS", "FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE",
    "AMENT_PREFIX_PATH", "PYTHONPATH", "LD_LIBRARY_PATH", "PYTHONUNBUFFERED",
)
#: Fast DDS profile of every ROS process of the tests (the one the launch file and the Makefile use).
FASTDDS_PROFILE: Path = REPO_ROOT / "config" / "fastdds_large_images.xml"

_counter = itertools.count()


# --------------------------------------------------------------------------------------------- domain ids
@dataclass
class DomainLease:
    """A ROS domain id held by this process until :meth:`release` (or until the process dies)."""

    domain_id: int
    lock_path: Path
    _fd: int | None = field(default=None, repr=False)

    def release(self) -> None:
        """Give the domain id back (idempotent)."""
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self) -> DomainLease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def allocate_domain_id(start: int | None = None, lock_dir: Path = LOCK_DIR) -> DomainLease:
    """Lease a domain id in ``DOMAIN_MIN..DOMAIN_MAX`` that no other process (or lease) on this machine holds.

    The search starts at ``start`` (default: spread by pid and a per-process counter, so consecutive tests and
    parallel processes start at different ids) and takes the first id whose lock file it can ``flock``. The lock
    is released by :meth:`DomainLease.release` or by the kernel when the process exits, so a crashed run never
    leaks an id. Raises RuntimeError when all ids are taken.
    """
    lock_dir.mkdir(parents=True, exist_ok=True)
    n = DOMAIN_MAX - DOMAIN_MIN + 1
    if start is None:
        start = DOMAIN_MIN + (os.getpid() * 7 + next(_counter) * 37) % n
    for i in range(n):
        domain_id = DOMAIN_MIN + (start - DOMAIN_MIN + i) % n
        path = lock_dir / f"domain_{domain_id}.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        return DomainLease(domain_id, path, fd)
    raise RuntimeError(f"all ROS domain ids {DOMAIN_MIN}..{DOMAIN_MAX} are leased (locks in {lock_dir})")


# --------------------------------------------------------------------------------------------- environment
def _interfaces_paths() -> tuple[Path, Path] | None:
    """(lib dir, site-packages dir) of install_interfaces/, or None when it is not built."""
    site = interfaces_site(INTERFACES_INSTALL)
    return (INTERFACES_INSTALL / "lib", site) if site.is_dir() else None


def _package_parent() -> Path:
    """The folder from which the test process imports egmt_ros (spawned helpers import the same copy)."""
    import egmt_ros

    return Path(egmt_ros.__file__).resolve().parent.parent


def ros_env(domain_id: int, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for a ROS process on ``domain_id``: a copy of ``base`` (default ``os.environ``) with
    the domain id, localhost-only discovery, the Fast DDS profile :data:`FASTDDS_PROFILE` (and no other profile or
    FASTDDS_BUILTIN_TRANSPORTS, which the profile would ignore anyway), the venv (and install_interfaces when
    built) on AMENT_PREFIX_PATH, egmt_ros and the test interfaces on PYTHONPATH, their libraries on
    LD_LIBRARY_PATH, and unbuffered Python output (so logs are complete when a process is killed).
    """
    if not DOMAIN_MIN - 1 <= domain_id <= 232:
        raise ValueError(f"ROS domain id {domain_id} out of range")
    env = dict(os.environ if base is None else base)
    env["ROS_DOMAIN_ID"] = str(domain_id)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env.pop("ROS_STATIC_PEERS", None)
    env.pop("ROS_LOCALHOST_ONLY", None)  # deprecated; conflicts with the discovery range
    env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(FASTDDS_PROFILE)
    env.pop("FASTRTPS_DEFAULT_PROFILES_FILE", None)  # deprecated name; rmw_fastrtps would load it as well
    env.pop("FASTDDS_BUILTIN_TRANSPORTS", None)
    env["PYTHONUNBUFFERED"] = "1"
    ament = [sys.prefix]
    pypath: list[str | Path] = [_package_parent()]
    ld: list[str | Path] = [Path(sys.prefix) / "lib"]
    paths = _interfaces_paths()
    if paths is not None:
        ament.insert(0, str(INTERFACES_INSTALL))
        pypath.append(paths[1])
        ld.insert(0, paths[0])
    env["AMENT_PREFIX_PATH"] = prepend_path(env.get("AMENT_PREFIX_PATH"), *ament)
    env["PYTHONPATH"] = prepend_path(env.get("PYTHONPATH"), *pypath)
    env["LD_LIBRARY_PATH"] = prepend_path(env.get("LD_LIBRARY_PATH"), *ld)
    return env


def use_test_interfaces() -> bool:
    """Make install_interfaces/ usable in this (already running) process; False when it is not built
    (egmt_ros.nodes.environment.use_interfaces, which bringup uses too)."""
    return use_interfaces(INTERFACES_INSTALL)


@dataclass
class RosDomain:
    """The ROS domain of one test: its id and the environment for processes on it."""

    domain_id: int
    env: dict[str, str]


@contextmanager
def ros_domain_scope(start: int | None = None) -> Iterator[RosDomain]:
    """Lease a domain id and set its ROS variables in ``os.environ``; restore them and release the id on exit."""
    lease = allocate_domain_id(start)
    saved = {k: os.environ.get(k) for k in ROS_ENV_KEYS}
    try:
        env = ros_env(lease.domain_id)
        for k in ROS_ENV_KEYS:
            if k in env:
                os.environ[k] = env[k]
            else:
                os.environ.pop(k, None)
        yield RosDomain(lease.domain_id, env)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        lease.release()


# --------------------------------------------------------------------------------------------- processes
@dataclass
class Tracked:
    """A spawned process and the file that collects its stdout and stderr."""

    proc: subprocess.Popen[bytes]
    name: str
    log_path: Path
    _log: IO[bytes] = field(repr=False)


class ProcessTracker:
    """Starts processes in their own process group and kills every group at :meth:`kill_all`."""

    def __init__(self, log_dir: Path | None = None, grace: float = 3.0) -> None:
        """``log_dir`` collects one log per process (default: a new temporary folder); ``grace`` is the default
        time :meth:`kill_all` gives processes to exit on SIGTERM before the SIGKILL."""
        self.log_dir = Path(log_dir) if log_dir is not None else Path(tempfile.mkdtemp(prefix="egmt_ros_procs_"))
        self.grace = grace
        self.tracked: list[Tracked] = []

    def spawn(self, cmd: Sequence[str | Path], env: dict[str, str] | None = None, cwd: str | Path | None = None,
              name: str | None = None, die_with_parent: bool = True) -> subprocess.Popen[bytes]:
        """Start ``cmd`` (stdin closed, stdout+stderr to a log file) in a new session; it is killed at teardown.

        ``env`` defaults to a copy of ``os.environ`` (inside the ``ros_domain`` fixture: the test's ROS domain).
        With ``die_with_parent`` (and util-linux ``setpriv`` present) the process also gets SIGKILL from the kernel
        if the test process dies without a teardown (killed by a CI timeout, say).
        """
        cmd = [str(c) for c in cmd]
        if name is None:
            scripts = [c for c in cmd if c.endswith(".py")]
            name = Path(scripts[0] if scripts else cmd[0]).name
        if die_with_parent and _SETPRIV is not None:
            cmd = [_SETPRIV, "--pdeathsig", "KILL", "--", *cmd]
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{len(self.tracked):02d}_{name}.log"
        log = open(log_path, "wb")
        try:
            proc = subprocess.Popen(cmd, env=dict(os.environ) if env is None else env, cwd=cwd,
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        except BaseException:
            log.close()
            raise
        self.tracked.append(Tracked(proc, name, log_path, log))
        if cmd[0] == _SETPRIV:
            _wait_past_setpriv(proc)
        return proc

    def output(self, proc: subprocess.Popen[bytes], tail: int = 4000) -> str:
        """The last ``tail`` characters the process wrote (stdout and stderr)."""
        for t in self.tracked:
            if t.proc is proc:
                return t.log_path.read_bytes()[-tail:].decode(errors="replace")
        raise KeyError(f"process {proc.pid} is not tracked here")

    def describe(self, tail: int = 2000) -> str:
        """Each tracked process: command, state and the tail of its output (for failure messages)."""
        parts = []
        for t in self.tracked:
            rc = t.proc.poll()
            state = "running" if rc is None else f"exited with {rc}"
            out = t.log_path.read_bytes()[-tail:].decode(errors="replace") if t.log_path.exists() else ""
            parts.append(f"--- {t.name} (pid {t.proc.pid}, {state}): {' '.join(map(str, t.proc.args))}\n{out}")
        return "\n".join(parts)

    def kill_all(self, grace: float | None = None) -> None:
        """SIGTERM every process group, wait up to ``grace`` s (default ``self.grace``) for the leaders, then SIGKILL
        the groups (so children that ignore SIGTERM or outlive their parent go too) and reap. Safe to call twice."""
        grace = self.grace if grace is None else grace
        for t in self.tracked:
            if t.proc.poll() is None:
                _killpg(t.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for t in self.tracked:
            try:
                t.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for t in self.tracked:
            _killpg(t.proc.pid, signal.SIGKILL)
            t.proc.wait()
            t._log.close()


_SETPRIV: str | None = shutil.which("setpriv")


def _wait_past_setpriv(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """Wait until ``setpriv`` has set its death signal and exec'd the real command. ``Popen`` returns once setpriv
    itself runs; a parent killed before setpriv's prctl would leave the child behind (seen once in CI, and in 1 of
    ~40 tries on a loaded machine)."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            with open(f"/proc/{proc.pid}/cmdline", "rb") as f:
                argv0 = f.read().split(b"\0", 1)[0].decode(errors="replace")
        except FileNotFoundError:
            return
        if argv0 not in ("", _SETPRIV):  # empty: an exec under way (its new argv not yet in place)
            return
        time.sleep(0.002)


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


_active_trackers: list[ProcessTracker] = []
_fallback_tracker: ProcessTracker | None = None


def _current_tracker() -> ProcessTracker:
    global _fallback_tracker
    if _active_trackers:
        return _active_trackers[-1]
    if _fallback_tracker is None:
        import atexit

        _fallback_tracker = ProcessTracker()
        atexit.register(_fallback_tracker.kill_all)
    return _fallback_tracker


def spawn(cmd: Sequence[str | Path], env: dict[str, str] | None = None, **kwargs: Any) -> subprocess.Popen[bytes]:
    """Start a tracked process with the current test's tracker (killed at the test's teardown); outside a test,
    with a tracker killed at interpreter exit. See :meth:`ProcessTracker.spawn`."""
    return _current_tracker().spawn(cmd, env, **kwargs)


def python_cmd(script: str | Path, *args: str | int | float) -> list[str]:
    """``[sys.executable, script, *args]``: a helper script run with the test's interpreter."""
    return [sys.executable, str(script), *map(str, args)]


def describe_processes() -> str:
    """State and output of the processes of the current test (empty when none)."""
    return "\n".join(t.describe() for t in _active_trackers)


# --------------------------------------------------------------------------------------------- rclpy side
@contextmanager
def rclpy_context(domain_id: int) -> Iterator[Any]:
    """A fresh initialised ``rclpy.Context`` on ``domain_id`` (no signal handlers, so Ctrl-C stays pytest's)."""
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=domain_id, signal_handler_options=SignalHandlerOptions.NO)
    try:
        yield ctx
    finally:
        ctx.try_shutdown()


def wait_for_messages(node: Any, topic: str, msg_type: type, count: int = 1, timeout: float = 10.0,
                      qos: Any = None, predicate: Callable[[Any], bool] | None = None) -> list[Any]:
    """Subscribe to ``topic`` and spin ``node`` until ``count`` messages (those passing ``predicate``) arrived.

    The node is spun in a temporary executor (and handed back to its previous executor afterwards), so do not call
    this while another thread spins the same node. ``qos`` defaults to the sensor-data profile (best effort, keep
    last 5; a publisher must then be best effort or reliable). Returns the messages in arrival order;
    raises TimeoutError after ``timeout`` seconds saying how many arrived, how many publishers were matched and what
    the spawned processes printed.
    """
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import qos_profile_sensor_data

    received: list[Any] = []

    def on_msg(msg: Any) -> None:
        if predicate is None or predicate(msg):
            received.append(msg)

    sub = node.create_subscription(msg_type, topic, on_msg, qos_profile_sensor_data if qos is None else qos)
    previous = node.executor
    executor = SingleThreadedExecutor(context=node.context)
    executor.add_node(node)
    try:
        deadline = time.monotonic() + timeout
        while len(received) < count and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        if len(received) < count:
            raise TimeoutError(
                f"{len(received)}/{count} {msg_type.__name__} messages on {topic} within {timeout} s "
                f"(publishers matched: {sub.get_publisher_count()})\n{describe_processes()}")
        return received[:count]
    finally:
        executor.remove_node(node)
        executor.shutdown()
        if previous is not None:
            previous.add_node(node)
        node.destroy_subscription(sub)


def wait_for_publishers(node: Any, topic: str, count: int = 1, timeout: float = 10.0) -> int:
    """Wait until the ROS graph shows ``count`` publishers on ``topic``; returns the number seen.
    Raises TimeoutError (with the spawned processes' output) otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        n = node.count_publishers(topic)
        if n >= count:
            return n
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{n}/{count} publishers on {topic} after {timeout} s\n{describe_processes()}")
        time.sleep(0.02)


# --------------------------------------------------------------------------------------------- /dev/shm
#: Where Fast DDS keeps its shared-memory segments and ports on Linux.
SHM_DIR: Path = Path("/dev/shm")
#: Lock files of Fast DDS 2/3 segments (``fastdds_<16 hex>_el``) and ports (``fastdds_port<N>_el|_sl``); the owning
#: processes hold a flock on them while alive (the rule of ``fastdds shm clean``).
_SHM_LOCK_RE = re.compile(r"^fast(?:dds|rtps)_(?:[0-9a-z]{16}|port\d{1,5})_(?:el|sl)$")


def shm_files(shm_dir: Path = SHM_DIR) -> set[str]:
    """Names of the Fast DDS files in ``shm_dir`` now (segments, ports, their locks and port mutexes)."""
    try:
        return {n for n in os.listdir(shm_dir) if n.startswith(("fastdds_", "fastrtps_", "sem.fastdds_",
                                                                  "sem.fastrtps_"))}
    except FileNotFoundError:
        return set()


def _lock_is_free(path: Path) -> bool:
    """True when no live process holds a flock on ``path`` (its Fast DDS owner is gone)."""
    try:
        with open(path, "rb") as fd:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
        return True
    except OSError:
        return False


def clean_fastdds_shm(before: set[str], shm_dir: Path = SHM_DIR, wait: float = 0.0) -> list[str]:
    """Remove the Fast DDS segments and ports that appeared in ``shm_dir`` since ``before`` (a :func:`shm_files`
    snapshot) and whose owning processes are gone (their lock file is not locked): what processes killed with
    SIGKILL leave behind. Files that were there before, or are still in use, are kept. ``wait``: seconds to give
    locks that are still held to be released (a killed process's forked helpers, which share its lock, may outlive
    it by a moment). Returns the names removed."""
    removed = []
    bases = sorted({n[:-3] for n in shm_files(shm_dir) - before if _SHM_LOCK_RE.match(n)})
    deadline = time.monotonic() + wait
    while bases:
        held = [b for b in bases if not _remove_if_free(shm_dir, b, removed)]
        if held == bases and time.monotonic() >= deadline:
            break
        bases = held
        if bases:
            time.sleep(0.2)
    return removed


def _remove_if_free(shm_dir: Path, base: str, removed: list[str]) -> bool:
    """Remove segment or port ``base`` with its lock files (and port mutex) unless a process holds a lock on it;
    True when it is gone (removed now or already)."""
    locks = [shm_dir / f"{base}{s}" for s in ("_el", "_sl") if (shm_dir / f"{base}{s}").exists()]
    if not all(_lock_is_free(p) for p in locks):
        return False
    for name in (base, f"{base}_el", f"{base}_sl", f"sem.{base}_mutex"):
        try:
            (shm_dir / name).unlink()
            removed.append(name)
        except FileNotFoundError:
            pass
    return True


# --------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(name="ros_domain")
def ros_domain_fixture() -> Iterator[RosDomain]:
    """A leased ROS domain for this test; ``os.environ`` carries its variables until teardown."""
    with ros_domain_scope() as dom:
        yield dom


@pytest.fixture(name="process_tracker")
def process_tracker_fixture(tmp_path: Path, ros_domain: RosDomain) -> Iterator[ProcessTracker]:
    """The test's process tracker: every process it spawned is killed (whole group) at teardown, pass or fail.

    It depends on ``ros_domain`` so that processes are killed before the domain id is released, and so that
    ``spawn(cmd)`` without ``env`` starts them on the test's domain. ``$EGMT_TEST_KILL_GRACE`` (seconds, default 3)
    is how long processes get to exit on SIGTERM."""
    tracker = ProcessTracker(tmp_path / "procs", grace=float(os.environ.get("EGMT_TEST_KILL_GRACE", "3.0")))
    _active_trackers.append(tracker)
    try:
        yield tracker
    finally:
        _active_trackers.remove(tracker)
        tracker.kill_all()


@pytest.fixture(name="spawn")
def spawn_fixture(process_tracker: ProcessTracker) -> Callable[..., subprocess.Popen[bytes]]:
    """``spawn(cmd, env=None, cwd=None, name=None) -> Popen``, tracked and killed at teardown."""
    return process_tracker.spawn


@pytest.fixture(name="ros_context")
def ros_context_fixture(ros_domain: RosDomain) -> Iterator[Any]:
    """An rclpy context on the test's domain, shut down at teardown."""
    with rclpy_context(ros_domain.domain_id) as ctx:
        yield ctx


@pytest.fixture(name="ros_node")
def ros_node_fixture(ros_context: Any) -> Iterator[Any]:
    """A node named ``egmt_test_<pid>_<n>`` in the test's context, destroyed at teardown."""
    import rclpy

    node = rclpy.create_node(f"egmt_test_{os.getpid()}_{next(_counter)}", context=ros_context)
    try:
        yield node
    finally:
        node.destroy_node()
