"""egmt_ros.model: the EGMT network and everything around it (torch; no ROS).

- ``config``: :class:`EGMTConfig`, ``paper_config()``, ``rt_config()``
- ``network``: :class:`EGMT` (``forward(ir, vi, ent, ent_mask) -> (fused, logits)``, ``fuse(...) -> fused``)
- ``losses``: :class:`EGMTLoss` (Eq. 9-15), ``class_weights_from_labels``
- ``checkpoint``: ``save_checkpoint`` / ``load_checkpoint`` (weights + model card, ``NAME.card.json``)
- ``text``: text encoders for entity labels (``MiniLMEncoder``), cached by (encoder id, label)
- ``method``: EGMT as a FusionMethod (:class:`EGMTFuser`; registered as ``egmt_rt`` / ``egmt`` in ``fusion.methods``)
- ``backends``: inference backends (one file each, a registry by name)
- ``export``: THE ONNX export of the fusion path and an ONNX Runtime runner
"""
