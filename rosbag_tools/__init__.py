"""rosbag_tools: rosbag2 bags for egmt_ros without a rosbag2 install (rosbags + rclpy).

Command-line tools (``python -m rosbag_tools.NAME``; docs/rosbag_tools.md):
  make_bag  pair folder / videos -> bag with /thermal/image_raw + /rgb/image_raw (simulated camera behaviour)
  play      bag -> live topics (rclpy, raw CDR, bag timing, /clock)
  record    live topics -> bag (raw subscriptions, receive-time timestamps)
  export    bag -> PNG files (+ MP4 per image topic); of a damaged bag every readable message
  evaluate  input bag + output bag -> latency, drops, fusion metrics, detections, report

Only ``play``, ``record`` and ``live`` import rclpy; the rest works with rosbags alone.
"""
