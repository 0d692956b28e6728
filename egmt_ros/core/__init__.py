"""egmt_ros.core: the ground floor every other room of egmt_ros builds on (numpy + OpenCV only; no torch, no ROS).

- ``images``: 8-bit <-> float [0, 1] images, image files, the ir/ + vi/ pair-folder convention
- ``color``: luma and chroma (the network fuses Y; the fused colour image takes the visible Cb/Cr)
- ``methods``: the fusion-method contract and the explicit registry of methods by name
- ``classes``: class names and words (multi-label classes, synonyms, singular nouns)
- ``codec``: the ROS-free sensor_msgs/Image and vision_msgs/Detection2DArray codec (nodes and rosbag_tools)

Nothing here imports another egmt_ros package; every other package may import this one.
"""
