#!/usr/bin/env bash
# Build the test-only interface packages under test/interfaces/ (today: a vision_msgs 4.x stand-in, same
# messages and field layout as ros-perception/vision_msgs) with the ROS 2 pip wheels, for CI machines where
# vision_msgs cannot be installed. A robot with a real vision_msgs never needs this.
#
#   bash scripts/build_test_interfaces.sh          # builds once; later runs skip while the sources are unchanged
#   FORCE=1 bash scripts/build_test_interfaces.sh  # rebuild
#
# Output (repository root, never committed):
#   build_interfaces/src/<pkg>   copies of test/interfaces/<pkg> with package.xml.in / CMakeLists.txt.in renamed
#   build_interfaces/<pkg>       colcon build base;  build_interfaces/log: colcon logs
#   install_interfaces/          colcon install base (merged)
#
# Sources are kept out of a user's `colcon build` twice over: test/interfaces/COLCON_IGNORE, and the manifest and
# CMake file are named package.xml.in / CMakeLists.txt.in; build_interfaces/ and install_interfaces/ get a
# COLCON_IGNORE too.
#
# Environment to use the messages afterwards (test/ros_harness.py does this by itself when install_interfaces/
# exists), either
#   source install_interfaces/setup.bash
# or
#   export AMENT_PREFIX_PATH=$PWD/install_interfaces:$AMENT_PREFIX_PATH
#   export PYTHONPATH=$PWD/install_interfaces/lib/python3.11/site-packages:$PYTHONPATH
#   export LD_LIBRARY_PATH=$PWD/install_interfaces/lib:$LD_LIBRARY_PATH
# then `python -c "from vision_msgs.msg import Detection2DArray"` works. The libraries carry an RPATH to
# install_interfaces/lib, so the import also works in a process started before LD_LIBRARY_PATH was set, as long as
# LD_LIBRARY_PATH is in os.environ before the first message is published or received.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VIRTUAL_ENV:-$REPO/.venv}"
PY="$VENV/bin/python"
SRC="$REPO/test/interfaces"
BUILD="$REPO/build_interfaces"
INSTALL="$REPO/install_interfaces"
STAMP="$INSTALL/.egmt_interfaces.sha256"

[ -x "$PY" ] || { echo "build_test_interfaces: no python at $PY (set VIRTUAL_ENV or create .venv)" >&2; exit 1; }

# The packages: every folder under test/interfaces with a package.xml.in.
mapfile -t PKGS < <(cd "$SRC" && for d in */; do [ -f "$d/package.xml.in" ] && echo "${d%/}"; done)
[ "${#PKGS[@]}" -gt 0 ] || { echo "build_test_interfaces: no package under $SRC" >&2; exit 1; }

# Rebuild only when the sources (or this script) changed.
HASH="$(cd "$REPO" && { find test/interfaces -type f ! -name '*.pyc' -print0 | sort -z | xargs -0 sha256sum;
                        sha256sum scripts/build_test_interfaces.sh; } | sha256sum | cut -d' ' -f1)"
if [ -z "${FORCE:-}" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$HASH" ] && [ -f "$INSTALL/setup.bash" ]; then
  echo "build_test_interfaces: up to date (${PKGS[*]} in $INSTALL)"
  exit 0
fi

export VIRTUAL_ENV="$VENV"
export PATH="$VENV/bin:$PATH"
case ":${AMENT_PREFIX_PATH:-}:" in *":$VENV:"*) ;; *) export AMENT_PREFIX_PATH="$VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}";; esac

# Workaround: the wheels' CMake exports name the wheel build machine's Python include paths. Idempotent.
PYINC="$("$PY" -c "import sysconfig; print(sysconfig.get_paths()['include'])")"
NPINC="$("$PY" -c "import numpy; print(numpy.get_include())")"
BAD="$(grep -rl /opt/python/cp311 "$VENV"/share/*/cmake 2>/dev/null || true)"
if [ -n "$BAD" ]; then
  echo "$BAD" | xargs sed -i \
    "s#/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include#$NPINC#g; s#/opt/python/cp311-cp311/include/python3.11#$PYINC#g"
fi

START=$(date +%s)
rm -rf "$BUILD/src" "$INSTALL"
mkdir -p "$BUILD/src"
touch "$BUILD/COLCON_IGNORE"
for p in "${PKGS[@]}"; do
  cp -r "$SRC/$p" "$BUILD/src/$p"
  for f in package.xml CMakeLists.txt; do
    if [ -f "$BUILD/src/$p/$f.in" ]; then mv "$BUILD/src/$p/$f.in" "$BUILD/src/$p/$f"; fi
  done
done

cd "$BUILD"
colcon --log-base "$BUILD/log" build \
  --base-paths "$BUILD/src" --build-base "$BUILD" --install-base "$INSTALL" --merge-install \
  --event-handlers console_cohesion- summary+ \
  --cmake-args -DBUILD_TESTING=OFF -DCMAKE_BUILD_TYPE=Release \
    "-DPython3_EXECUTABLE=$PY" "-DCMAKE_INSTALL_RPATH=$INSTALL/lib"
touch "$INSTALL/COLCON_IGNORE"
echo "$HASH" > "$STAMP"
echo "build_test_interfaces: built ${PKGS[*]} into $INSTALL in $(( $(date +%s) - START )) s"
