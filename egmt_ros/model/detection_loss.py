"""Detection-aware fusion term: a frozen, differentiable COCO detector (YOLOv5n) looks at the fused image.

As TarDAL and SeAFusion train fusion with a task loss, but without detection labels: whatever the frozen detector
finds in either source should be found in the fused image with at least the same confidence. For every prediction
(anchor x cell) of the detector, ``s = objectness * max class probability``;

    L_det = sum over predictions with r > thr of relu(r - s_F) / (their count + 1),   r = max(s_IR, s_VI)

(``s_IR`` and ``s_VI`` without gradient). An object seen in one source but washed out in the fused image (a torso
under bright smoke) is penalised; nothing is asked where neither source shows anything. The detector's parameters
are frozen (``requires_grad=False``, eval mode) and it is kept out of the loss module's parameters and state dict, so
the optimiser never sees it and checkpoints never store it; the gradient flows through it into the fused image only.

Grey images are replicated to 3 channels and padded (grey 114, as the detector's letterbox) to a multiple of the
detector's stride (32). The frozen network comes from the caller (:func:`egmt_ros.detection.yolov5_backend.
load_frozen_yolov5`: ``<data root>/weights/yolov5n.pt``, the official checkpoint, a pickle: loaded only with
``trust_pickle``), so the model package never imports the detection package.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: Predictions whose source score is below this are ignored (nothing there to keep).
SCORE_THRESHOLD = 0.1
#: Padding grey of the detector's letterbox.
PAD_VALUE = 114.0 / 255.0


class DetectionConsistencyLoss:
    """``L_det`` of the module docstring around a frozen detector network (``net(x)[0]`` = ``[B, N, 5 + classes]``
    with sigmoid objectness at 4 and class probabilities from 5, the YOLOv5 inference output)."""

    def __init__(self, net: nn.Module, stride: int = 32, threshold: float = SCORE_THRESHOLD) -> None:
        self.net = net.eval()
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.stride = int(stride)
        self.threshold = float(threshold)

    def scores(self, x: Tensor) -> Tensor:
        """``[B, N]`` detector scores of grey ``[B, 1, H, W]`` images in [0, 1]."""
        h, w = x.shape[-2:]
        ph, pw = (-h) % self.stride, (-w) % self.stride
        x3 = F.pad(x.expand(-1, 3, -1, -1), (0, pw, 0, ph), value=PAD_VALUE)
        pred = self.net(x3)[0]
        return pred[..., 4] * pred[..., 5:].amax(dim=-1)

    def __call__(self, fused: Tensor, ir: Tensor, vi: Tensor) -> Tensor:
        """The scalar ``L_det`` (differentiable in ``fused``)."""
        with torch.no_grad():
            ref = torch.maximum(self.scores(ir), self.scores(vi))
            keep = (ref > self.threshold).to(ref.dtype)
        s_f = self.scores(fused)
        return (F.relu(ref - s_f) * keep).sum() / (keep.sum() + 1.0)
