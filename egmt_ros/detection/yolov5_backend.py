"""YOLOv5 detector backend: the official YOLOv5 checkpoints (``yolov5n.pt`` ...) through the ``yolov5`` package.

Beside the default OpenVINO YOLO11n (:class:`egmt_ros.detection.detector.Detector`), with the same interface
(``detect``, ``detect_batch``, ``set_classes``, ``class_names``, ``annotate``) and the detector's usual processing:
letterbox to ``imgsz`` x ``imgsz`` (aspect kept, grey 114 padding), confidence / IoU non-maximum suppression, boxes
scaled back to the input image. CPU or CUDA (float16 on CUDA with ``half``).

The letterbox runs in torch on the model's device, so a fused image that is already a tensor on the GPU
(:meth:`YOLOv5Detector.detect_tensor`) goes to the network without a round trip through host memory; numpy images
are copied to the device once.

An official checkpoint is a Python pickle: loading it runs code named in the file. It is loaded only with
``trust_pickle=True`` (the detection node's ``weights_trust_pickle`` parameter); without it the constructor refuses
with an ``UntrustedWeightsError`` (a ValueError) that says so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from egmt_ros.detection.detector import TRUST_HINT, Detection, Detector, UntrustedWeightsError, to_detector_input
from egmt_ros.paths import data_root

#: The official YOLOv5n COCO checkpoint under the data root (GPL-3.0, Ultralytics).
DEFAULT_YOLOV5_SUBPATH = Path("weights") / "yolov5n.pt"
#: letterbox padding grey (ultralytics and YOLOv5 use 114 of 255)
PAD_VALUE = 114.0 / 255.0


def _import_yolov5():
    """The ``yolov5`` package's model module (importing it makes the pickled ``models.yolo`` classes loadable)."""
    try:
        import yolov5.models.yolo as yolo  # noqa: F401 - appends the package root to sys.path for the pickle
        from yolov5.utils.general import non_max_suppression
    except ImportError as exc:
        raise ImportError(f"detector backend 'yolov5' needs the Python package yolov5==7.0.14 (pip install --no-deps "
                          f"-r requirements-yolov5.txt): {exc}") from exc
    return non_max_suppression


def letterbox(images: Tensor, size: int) -> tuple[Tensor, float, tuple[float, float]]:
    """``[B, 3, H, W]`` float [0, 1] -> ``[B, 3, size, size]`` (aspect kept, bilinear, grey borders) and the
    (gain, (pad x, pad y)) that maps letterboxed pixel coordinates back to the input's."""
    h, w = images.shape[-2:]
    gain = min(size / h, size / w)
    nh, nw = int(round(h * gain)), int(round(w * gain))
    if (nh, nw) != (h, w):
        images = F.interpolate(images, size=(nh, nw), mode="bilinear", align_corners=False)
    dw, dh = (size - nw) / 2, (size - nh) / 2
    left, top = int(round(dw - 0.1)), int(round(dh - 0.1))
    out = images.new_full((images.shape[0], 3, size, size), PAD_VALUE)
    out[:, :, top:top + nh, left:left + nw] = images
    return out, gain, (float(left), float(top))


def find_yolov5_weights(explicit: str | None = None) -> Path:
    """``explicit``, else ``<data root>/weights/yolov5n.pt``; FileNotFoundError naming the path otherwise."""
    p = Path(explicit).expanduser() if explicit else data_root() / DEFAULT_YOLOV5_SUBPATH
    if not p.is_file():
        raise FileNotFoundError(f"YOLOv5 weights {str(p)!r} not found (give a YOLOv5 .pt checkpoint; the default is "
                                f"<data root>/{DEFAULT_YOLOV5_SUBPATH})")
    return p


def _fuse_conv_bn(net: torch.nn.Module) -> torch.nn.Module:
    """Fold each YOLOv5 ``Conv``'s batch norm into its convolution (what the checkpoint's own ``fuse()`` is meant to
    do; it tests the classes of ``yolov5.models.common``, while the unpickled modules are ``models.common``'s), and
    apply yolov5's fix-up for newer torch (``Upsample.recompute_scale_factor``)."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    for m in net.modules():
        if hasattr(m, "conv") and isinstance(getattr(m, "bn", None), torch.nn.BatchNorm2d) and \
                hasattr(m, "forward_fuse"):
            m.conv = fuse_conv_bn_eval(m.conv, m.bn)
            delattr(m, "bn")
            m.forward = m.forward_fuse
        elif isinstance(m, torch.nn.Upsample) and not hasattr(m, "recompute_scale_factor"):
            m.recompute_scale_factor = None
    return net


class YOLOv5Detector(Detector):
    """An official YOLOv5 checkpoint with the :class:`Detector` interface (its methods ``class_id``,
    ``set_classes``, ``detect`` and ``annotate`` are inherited; the model and its processing are this class's)."""

    def __init__(self, weights: str | None = None, device: str = "cpu", conf: float = 0.25, iou: float = 0.45,
                 imgsz: int = 640, classes: list[str] | None = None, max_det: int = 300,
                 trust_pickle: bool = False, half: bool | None = None) -> None:  # noqa: D107 - the class says it
        self._nms = _import_yolov5()
        path = find_yolov5_weights(weights)
        if not trust_pickle:
            raise UntrustedWeightsError(f"refusing to load {path}: a YOLOv5 checkpoint is a Python pickle, and loading "
                                        "one runs any code it contains. Only for a file you trust (the official "
                                        f"release), pass trust_pickle=True: {TRUST_HINT}")
        self.weights = str(path)
        self.torch_device = torch.device(device)
        if self.torch_device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' requested, but torch sees no CUDA device")
        ckpt = torch.load(path, map_location="cpu", weights_only=False)  # trusted above: an official checkpoint
        net = _fuse_conv_bn((ckpt.get("ema") or ckpt["model"]).float().eval())
        self.half = self.torch_device.type == "cuda" if half is None else bool(half)
        self.net = net.to(self.torch_device, torch.float16 if self.half else torch.float32)
        names = net.names
        self.class_names = [names[i] for i in sorted(names)] if isinstance(names, dict) else list(names)
        self.device, self.conf, self.iou, self.imgsz, self.max_det = device, conf, iou, imgsz, max_det
        self.class_ids: list[int] | None = None
        self.set_classes(classes)

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        """Detections for each image of a list (uint8 / float [0, 1] RGB or grey; sizes may differ)."""
        out: list[list[Detection]] = []
        for im in images:  # one host -> device copy per image, letterbox on the device
            t = torch.from_numpy(to_detector_input(im)).to(self.torch_device).permute(2, 0, 1)[None]
            out.extend(self.detect_tensor(t.float().div_(255.0)))
        return out

    @torch.inference_mode()
    def detect_tensor(self, images: Tensor) -> list[list[Detection]]:
        """Detections in ``[B, 3, H, W]`` (or ``[3, H, W]``) float RGB [0, 1] images on any device (moved to the
        model's device if elsewhere): the GPU path for a fused tensor that never left the GPU."""
        if images.dim() == 3:
            images = images[None]
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected [B, 3, H, W] RGB images, got shape {tuple(images.shape)}")
        h, w = images.shape[-2:]
        x, gain, (px, py) = letterbox(images.to(self.torch_device, torch.float32), self.imgsz)
        pred = self.net(x.to(torch.float16 if self.half else torch.float32))[0]
        kept = self._nms(pred.float(), self.conf, self.iou, classes=self.class_ids, max_det=self.max_det)
        results = []
        for det in kept:
            boxes = det[:, :4].clone()
            boxes[:, [0, 2]] = ((boxes[:, [0, 2]] - px) / gain).clamp_(0, w)
            boxes[:, [1, 3]] = ((boxes[:, [1, 3]] - py) / gain).clamp_(0, h)
            rows = torch.cat([boxes, det[:, 4:6]], dim=1).cpu().numpy().astype(float)
            results.append([Detection(int(c), self.class_names[int(c)], float(s), (float(x1), float(y1), float(x2),
                                                                                   float(y2)))
                            for x1, y1, x2, y2, s, c in rows])
        return results


def load_frozen_yolov5(weights: str | None = None, device: str | torch.device = "cpu",
                       trust_pickle: bool = False) -> nn.Module:
    """The YOLOv5 network of ``weights`` (default: the data root's yolov5n.pt), in eval mode, all parameters frozen."""
    net = YOLOv5Detector(weights, device="cpu", trust_pickle=trust_pickle, half=False).net
    net = net.to(device).float().eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net
