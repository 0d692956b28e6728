"""The house rules of issue 15, checked on the source with ``ast`` (lazy imports inside functions count too):
rooms import downward only (no circle between packages), rclpy only in the ROS rooms, rosbag_tools never imports
the nodes, a thin fusion node, one fusion path, one ONNX export, no import by string."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOP_PACKAGES = ("egmt_ros", "rosbag_tools")

#: The floors of the house, lowest first (docs/DEVELOPING.md): a room imports only rooms of lower floors; the top
#: floor's rooms (the ROS glue, the command lines, the bag tools) may import each other but never form a circle.
FLOORS: list[tuple[str, ...]] = [
    ("egmt_ros.core", "egmt_ros.paths"),
    ("egmt_ros.metrics", "egmt_ros.model", "egmt_ros.report"),
    ("egmt_ros.fusion",),
    ("egmt_ros.detection",),
    ("egmt_ros.data", "egmt_ros.entities"),
    ("egmt_ros.nodes", "egmt_ros.cli", "rosbag_tools"),
]
FLOOR = {room: i for i, rooms in enumerate(FLOORS) for room in rooms}
#: Modules that may import rclpy (or a ROS message package): the nodes and the live bag tools.
ROS_MODULES = ("egmt_ros.nodes.", "rosbag_tools.live", "rosbag_tools.play", "rosbag_tools.record")
ROS_PACKAGES = {"rclpy", "rcl_interfaces", "builtin_interfaces", "std_msgs", "sensor_msgs", "vision_msgs",
                "diagnostic_msgs", "rosgraph_msgs", "geometry_msgs", "launch", "launch_ros"}


def _modules() -> dict[str, Path]:
    """Every module of the two packages: dotted name -> file."""
    out = {}
    for top in TOP_PACKAGES:
        for path in sorted((ROOT / top).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> list[tuple[str, int]]:
    """(imported module, line) of every import statement in the file, at any depth (lazy imports included).
    ``from X import Y`` gives ``X.Y`` when that is a module of ours, else ``X``; relative imports are resolved."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            for a in node.names:
                out.append((f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base, node.lineno))
    return out


def _room(module: str) -> str | None:
    """``egmt_ros.fusion.engine`` -> ``egmt_ros.fusion``; ``egmt_ros.paths`` -> itself; ``rosbag_tools.x`` ->
    ``rosbag_tools``; None for a module that is not ours (or the bare ``egmt_ros`` package)."""
    parts = module.split(".")
    if parts[0] == "rosbag_tools":
        return "rosbag_tools"
    if parts[0] == "egmt_ros" and len(parts) > 1:
        return ".".join(parts[:2])
    return None


def _room_edges() -> dict[tuple[str, str], list[str]]:
    """(room, imported room) -> the 'file:line' places that make that edge."""
    edges: dict[tuple[str, str], list[str]] = {}
    for name, path in MODULES.items():
        src = _room(name)
        for imported, line in _imports(name, path):
            dst = _room(imported)
            if src and dst and src != dst:
                edges.setdefault((src, dst), []).append(f"{path.relative_to(ROOT)}:{line}")
    return edges


EDGES = _room_edges()


def test_every_room_has_a_floor() -> None:
    rooms = {r for name in MODULES for r in [_room(name)] if r}
    assert rooms <= set(FLOOR), f"rooms without a floor (add them to FLOORS and docs/DEVELOPING.md): {rooms - set(FLOOR)}"


def test_library_rooms_import_downward_only() -> None:
    top = len(FLOORS) - 1
    wrong = {f"{s} -> {d}": where for (s, d), where in EDGES.items() if FLOOR[d] >= FLOOR[s] and FLOOR[s] < top}
    assert not wrong, f"imports that run up or sideways: {wrong}"


def test_no_circle_between_packages() -> None:
    graph: dict[str, set[str]] = {}
    for s, d in EDGES:
        graph.setdefault(s, set()).add(d)

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in graph.get(start, ()):
            if nxt == goal or (nxt not in seen and not seen.add(nxt) and reaches(nxt, goal, seen)):
                return True
        return False

    circles = sorted(f"{s} -> {d} ({EDGES[(s, d)][0]})" for s, d in EDGES if reaches(d, s, set()))
    assert not circles, f"edges on an import circle: {circles}"


def test_the_checks_see_lazy_imports() -> None:
    """The parser finds an import inside a function (the kind that closed the old circle)."""
    assert ("egmt_ros.model.method", "egmt_ros/fusion/methods.py") in {
        (m, str(MODULES["egmt_ros.fusion.methods"].relative_to(ROOT))) for m, _ in
        _imports("egmt_ros.fusion.methods", MODULES["egmt_ros.fusion.methods"])}
    assert "egmt_ros.fusion -> egmt_ros.model" in {f"{s} -> {d}" for s, d in EDGES}


def test_rclpy_only_in_the_nodes_and_the_live_bag_tools() -> None:
    wrong = [f"{path.relative_to(ROOT)}:{line} imports {m}" for name, path in MODULES.items()
             if not name.startswith(ROS_MODULES) for m, line in _imports(name, path) if m.split(".")[0] in ROS_PACKAGES]
    assert not wrong, wrong


def test_rosbag_tools_never_imports_the_nodes() -> None:
    wrong = [f"{path.relative_to(ROOT)}:{line}" for name, path in MODULES.items() if name.startswith("rosbag_tools")
             for m, line in _imports(name, path) if m.startswith(("egmt_ros.nodes", "egmt_ros.cli"))]
    assert not wrong, wrong


def test_fusion_node_is_thin() -> None:
    lines = MODULES["egmt_ros.nodes.fusion_node"].read_text().count("\n")
    assert lines <= 200, f"fusion_node has {lines} lines; its work belongs in egmt_ros.fusion.engine"


def _calls(predicate) -> list[str]:
    return [f"{path.relative_to(ROOT)}:{node.lineno}" for path in MODULES.values()
            for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Call) and predicate(node)]


def test_one_onnx_export() -> None:
    def is_export(call: ast.Call) -> bool:
        f = call.func
        return isinstance(f, ast.Attribute) and f.attr == "export" and ast.unparse(f.value).endswith("onnx")

    assert _calls(is_export) == [_calls(is_export)[0]] and _calls(is_export)[0].startswith("egmt_ros/model/export.py")


def test_one_fusion_path() -> None:
    """Fused luma + visible chroma is put together in one place, the engine (every caller goes through it)."""
    def merges(call: ast.Call) -> bool:
        f = call.func
        return (f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")) == "merge_luma"

    assert {place.split(":")[0] for place in _calls(merges)} == {"egmt_ros/fusion/engine.py"}


def _strings(path: Path) -> list[ast.Constant]:
    """The string constants of a file that are not docstrings."""
    tree = ast.parse(path.read_text())
    docs = {id(n.body[0].value) for n in ast.walk(tree) if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef))
            and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    return [n for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs]


def test_no_import_of_our_modules_by_string() -> None:
    """The library rooms never name one of our modules in a string (what an import by string needs); the top floor
    may, to start a process (``python -m egmt_ros.nodes.fusion_node``)."""
    wrong = [f"{path.relative_to(ROOT)}:{node.lineno} {node.value!r}" for name, path in MODULES.items()
             if _room(name) not in FLOORS[-1] for node in _strings(path) if "." in node.value and node.value in MODULES]
    assert not wrong, wrong
