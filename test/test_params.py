"""config/egmt.yaml and the nodes' declared defaults say the same thing."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from egmt_ros.nodes import detection_node, entity_node, fusion_node

CONFIG = Path(__file__).resolve().parents[1] / "config" / "egmt.yaml"


@pytest.mark.parametrize("name,module", [("fusion_node", fusion_node), ("entity_node", entity_node),
                                         ("detection_node", detection_node)])
def test_yaml_matches_node_defaults(name: str, module) -> None:
    params = yaml.safe_load(CONFIG.read_text())[f"/{name}"]["ros__parameters"]
    assert params == module.DEFAULTS
    for key, value in module.DEFAULTS.items():  # same types too (ROS parameters are typed)
        assert type(params[key]) is type(value), key


def test_qos_auto_follows_the_publishers() -> None:
    """``qos: auto`` (the fusion node's default): reliable when every publisher found is reliable, else best effort
    (which matches any publisher), as image_pipeline does."""
    from types import SimpleNamespace

    from rclpy.qos import ReliabilityPolicy

    from egmt_ros.nodes.common import qos_by_name

    def pub(reliability: ReliabilityPolicy) -> SimpleNamespace:
        return SimpleNamespace(qos_profile=SimpleNamespace(reliability=reliability))

    reliable, best_effort = ReliabilityPolicy.RELIABLE, ReliabilityPolicy.BEST_EFFORT
    chosen = qos_by_name("auto", 7, [pub(reliable), pub(reliable)])
    assert chosen.reliability == reliable and chosen.depth == 7
    assert qos_by_name("auto", 7, [pub(reliable), pub(best_effort)]).reliability == best_effort
    assert qos_by_name("auto", 7, []).reliability == best_effort
    assert fusion_node.DEFAULTS["qos"] == "auto"
