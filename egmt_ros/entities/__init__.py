"""egmt_ros.entities: keyframe choice, entity sources (detector, captions, vocabulary), captioner, entity extractor,
text encoders + feature cache, offline model loading, the multi-label class list. No ROS. See docs/entities.md.

Submodules are imported explicitly (``from egmt_ros.entities.sources import DetectorEntitySource``) so that importing
the package does not load torch or transformers.
"""
