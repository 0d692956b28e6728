"""Image captions with BLIP-2 (transformers ``Blip2ForConditionalGeneration`` + its processor), as the EGMT paper.

The model is a Hugging Face id already in the local cache (``Salesforce/blip2-opt-2.7b``,
``Salesforce/blip2-flan-t5-xl``, ...) or a local folder (see :mod:`egmt_ros.model.loading`); nothing downloads.
IR and VI images are captioned separately (:meth:`Blip2Captioner.caption_pair`), in one batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from egmt_ros.model.loading import ensure_offline, resolve_model, torch_dtype

ensure_offline()


def to_pil_rgb(image: np.ndarray) -> "object":
    """A grey/RGB(A) image (uint8, uint16 or float in [0, 1]) as an 8-bit RGB PIL image (grey is replicated)."""
    from PIL import Image

    arr = np.asarray(image)
    if arr.dtype == np.uint8:
        u8 = arr
    elif arr.dtype == np.uint16:
        u8 = (arr.astype(np.float32) / 257.0).round().astype(np.uint8)
    else:
        u8 = np.clip(np.rint(arr.astype(np.float32) * 255.0), 0, 255).astype(np.uint8)
    if u8.ndim == 3 and u8.shape[2] == 1:
        u8 = u8[:, :, 0]
    if u8.ndim == 2:
        u8 = np.repeat(u8[:, :, None], 3, axis=2)
    if u8.ndim != 3 or u8.shape[2] not in (3, 4):
        raise ValueError(f"expected a grey H x W or RGB H x W x 3 image, got shape {arr.shape}")
    return Image.fromarray(np.ascontiguousarray(u8[:, :, :3]), mode="RGB")


class Blip2Captioner:
    """BLIP-2 captioner: ``caption(image) -> str``, ``caption_pair(ir, vi) -> (ir_caption, vi_caption)``.

    ``prompt`` is the text the caption continues (``""``: plain captioning; ``"a photo of"`` for OPT models;
    ``"Question: what is in the picture? Answer:"`` style for Flan-T5 models). Generation uses ``max_new_tokens`` and
    ``num_beams`` (greedy when 1). ``device`` ("cpu", "cuda", "cuda:1") and ``dtype`` ("float32", "float16",
    "bfloat16") set where and how the model runs.
    """

    def __init__(self, model: str, prompt: str = "", max_new_tokens: int = 30, num_beams: int = 3,
                 device: str = "cpu", dtype: str | None = "float32") -> None:
        import torch
        from transformers import AutoProcessor, Blip2ForConditionalGeneration

        self.id = str(model)
        self.prompt = prompt or ""
        self.max_new_tokens = int(max_new_tokens)
        self.num_beams = int(num_beams)
        self.device = torch.device(device)
        self.dtype = torch_dtype(dtype)
        folder = resolve_model(model, kind="BLIP-2 captioner")
        self.processor = AutoProcessor.from_pretrained(str(folder))
        self.model = Blip2ForConditionalGeneration.from_pretrained(str(folder), dtype=self.dtype).to(self.device)
        self.model.eval()
        self._decoder_only = bool(getattr(self.model.config, "use_decoder_only_language_model", False))

    def caption_batch(self, images: Sequence[np.ndarray]) -> list[str]:
        """One caption per image (a single ``generate`` call)."""
        import torch

        pils = [to_pil_rgb(im) for im in images]
        inputs = self.processor(images=pils, text=[self.prompt] * len(pils), return_tensors="pt", padding=True)
        inputs = {k: (v.to(self.device, self.dtype) if v.is_floating_point() else v.to(self.device))
                  for k, v in inputs.items()}
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, num_beams=self.num_beams,
                                      do_sample=False)
        if self._decoder_only and out.shape[1] >= inputs["input_ids"].shape[1]:
            out = out[:, inputs["input_ids"].shape[1]:]  # decoder-only LMs return the prompt too
        texts = self.processor.batch_decode(out, skip_special_tokens=True)
        return [" ".join(t.split()) for t in texts]

    def caption(self, image: np.ndarray) -> str:
        """The caption of one grey/RGB image."""
        return self.caption_batch([image])[0]

    def caption_pair(self, ir: np.ndarray, vi: np.ndarray) -> tuple[str, str]:
        """(IR caption, VI caption): the two source images captioned separately, as the paper."""
        ir_cap, vi_cap = self.caption_batch([ir, vi])
        return ir_cap, vi_cap
