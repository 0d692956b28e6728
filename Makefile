# egmt_ros: the commands (see README.md)
#   make demo   play the default sample through the whole graph and write out/demo/report.html
#   make test   build with colcon, run colcon test, print colcon test-result --verbose
#   make run    start the three nodes (bringup) on the live camera topics; PARAMS as for make demo
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3
VENV := $(CURDIR)/.venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.egmt_installed
SAMPLE ?=
PARAMS ?=
RATE ?= 1
EGMT_DATA ?= $(abspath $(CURDIR)/../shared/data)
export EGMT_DATA
# ROS 2 environment for the pip wheels (an apt install sources /opt/ros/<distro>/setup.bash instead).
# Fast DDS: config/fastdds_large_images.xml (32 MiB shared-memory segment + UDPv4, so best-effort 640x512 bgr8 images
# arrive) unless FASTDDS_DEFAULT_PROFILES_FILE, FASTRTPS_DEFAULT_PROFILES_FILE or FASTDDS_BUILTIN_TRANSPORTS is set
# (the same rule as launch/fusion.launch.py; see README "Troubleshooting").
FASTDDS_PROFILE := $(CURDIR)/config/fastdds_large_images.xml
ROS_ENV := export VIRTUAL_ENV=$(VENV); export PATH=$(VENV)/bin:$$PATH; \
	export AMENT_PREFIX_PATH=$(VENV)$${AMENT_PREFIX_PATH:+:$$AMENT_PREFIX_PATH}; \
	if [ -z "$${FASTDDS_DEFAULT_PROFILES_FILE+1}$${FASTRTPS_DEFAULT_PROFILES_FILE+1}$${FASTDDS_BUILTIN_TRANSPORTS+1}" ]; then \
		export FASTDDS_DEFAULT_PROFILES_FILE=$(FASTDDS_PROFILE); fi; \
	export ROS_AUTOMATIC_DISCOVERY_RANGE=$${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}; \
	export YOLO_OFFLINE=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1; \
	if [ -f install_interfaces/setup.bash ]; then source install_interfaces/setup.bash; fi

.PHONY: venv test demo run build chromium interfaces clean

venv: $(STAMP)

# One install step for both commands: pinned requirements (constraints.txt is the full lock), the package editable.
$(STAMP): requirements.txt requirements-yolov5.txt requirements-ros-wheels.txt constraints.txt setup.py
	@test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --quiet --upgrade pip
	$(VPY) -m pip install --quiet -r requirements-ros-wheels.txt -r requirements.txt -c constraints.txt
	$(VPY) -m pip install --quiet --no-deps -r requirements-yolov5.txt -c constraints.txt
	$(VPY) -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $(VENV)/COLCON_IGNORE
	@touch $(STAMP)

# Headless Chromium renders the HTML reports in the tests (Debian package; needs root or sudo).
chromium:
	@command -v chromium >/dev/null || { \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

# vision_msgs is not on PyPI: CI builds an interface package from test/interfaces (never installed on a robot).
interfaces: venv
	@$(ROS_ENV); bash scripts/build_test_interfaces.sh

build: venv interfaces
	@$(ROS_ENV); colcon build --paths . --build-base build --install-base install \
		--event-handlers console_cohesion- summary-

test: build chromium
	@$(ROS_ENV); source install/setup.bash; \
	rc=0; colcon test --paths . --build-base build --install-base install \
		--event-handlers console_direct+ summary- --return-code-on-test-failure || rc=$$?; \
	colcon test-result --test-result-base build --verbose || rc=$$?; \
	exit $$rc

demo: build
	@$(ROS_ENV); source install/setup.bash; \
	$(VPY) -m egmt_ros.cli.demo $(if $(SAMPLE),--sample $(SAMPLE),) --rate $(RATE) $(foreach p,$(PARAMS),-p $(p)) \
		--out out/demo

# The graph on the live topics (/thermal/image_raw, /rgb/image_raw) until Ctrl-C; no colcon build needed.
run: interfaces
	@$(ROS_ENV); $(VPY) -m egmt_ros.nodes.bringup $(if $(PARAMS),--ros-args $(foreach p,$(PARAMS),-p $(p)),)

clean:
	rm -rf build install log build_interfaces install_interfaces out
