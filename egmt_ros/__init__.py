"""egmt_ros: entity-guided multi-task infrared/visible fusion (EGMT) for ROS 2.

The algorithm lives in ROS-free subpackages (model, entities, fusion, detection, metrics, data, cli);
only ``egmt_ros.nodes`` imports rclpy.
"""

__version__ = "0.1.0"
