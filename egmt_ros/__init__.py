"""egmt_ros: entity-guided multi-task infrared/visible fusion (EGMT) for ROS 2.

The algorithm lives in ROS-free subpackages on floors (docs/DEVELOPING.md): ``core`` (shared conventions), then
metrics, model, fusion (the one fusion engine), detection, data, entities, with nodes, cli (and rosbag_tools) on
top; only ``egmt_ros.nodes`` imports rclpy.
"""

__version__ = "0.1.0"
