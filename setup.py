"""ament_python package egmt_ros (also pip-installable: `pip install -e .`)."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "egmt_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=["egmt_ros", "egmt_ros.*", "rosbag_tools", "rosbag_tools.*"]),
    # C sources of the metric kernels, compiled at first use (egmt_ros/metrics/_native.py)
    package_data={"egmt_ros.metrics": ["*.c"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.xml")),
        (f"share/{PACKAGE}/rviz", glob("rviz/*.rviz")),
        (f"share/{PACKAGE}/models", glob("models/*.pt") + glob("models/*.json")),
    ],
    install_requires=["setuptools"],
    zip_safe=False,
    maintainer="egmt_ros maintainers",
    maintainer_email="maintainers@egmt-ros.dev",
    description="EGMT infrared/visible fusion, entities, detection and text control for ROS 2",
    license="AGPL-3.0-only",
    extras_require={"test": ["pytest"]},
    entry_points={
        "console_scripts": [
            "fusion_node = egmt_ros.nodes.fusion_node:main",
            "entity_node = egmt_ros.nodes.entity_node:main",
            "detection_node = egmt_ros.nodes.detection_node:main",
            "bringup = egmt_ros.nodes.bringup:main",
            "bag_play = rosbag_tools.play:main",
        ],
    },
)
