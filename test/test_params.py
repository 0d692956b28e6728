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
