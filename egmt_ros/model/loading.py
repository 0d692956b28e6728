"""Find model weights offline (a local path or the Hugging Face cache) and fail with an error that says what to do.

Nothing downloads at run time: ``HF_HUB_OFFLINE=1`` is set (unless the caller set it) before huggingface_hub is
imported, and the hub is only asked with ``local_files_only=True``. A model is given as

- a local folder (``save_pretrained`` output, ``huggingface-cli download ID --local-dir DIR``) or file, or
- a Hugging Face id (``Salesforce/blip2-opt-2.7b``) that is already in the Hugging Face cache
  (``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``).

When neither exists, :class:`ModelNotFoundError` names the id/path, the cache folder that was searched, and the two
ways to provide the weights.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


class ModelNotFoundError(FileNotFoundError):
    """Weights for a model id/path are not on this machine (the message says where it looked and what to do)."""


def ensure_offline() -> None:
    """Make the Hugging Face libraries offline for this process unless the user set ``HF_HUB_OFFLINE`` explicitly."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache folder, read from the environment now (``HF_HUB_CACHE`` > ``HF_HOME``/hub)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return Path("~/.cache/huggingface/hub").expanduser()


def looks_like_path(name: str) -> bool:
    """True for strings that can only be a filesystem path (absolute, ./, ../, ~, or more than one '/')."""
    return (name.startswith(("/", "./", "../", "~", "\\")) or name.count("/") > 1 or "\\" in name
            or name.endswith((".pt", ".pth", ".bin", ".safetensors", ".ckpt")))


def missing_model_message(name: str, kind: str, detail: str = "") -> str:
    """The error text for missing weights: what was looked for, where, and how to provide it."""
    cache = hf_cache_dir()
    local = Path(name).expanduser().resolve()
    lines = [f"{kind} weights {name!r} not found on this machine (nothing is downloaded at run time; "
             f"HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE', '')})."]
    if detail:
        lines.append(detail)
    lines.append(f"Looked for: a local path {local}")
    if not looks_like_path(name):
        lines[-1] += f" and the Hugging Face cache {cache} (folder models--{name.replace('/', '--')})"
    lines.append(
        "To provide it: on a machine with internet run `huggingface-cli download " + name + "` (or `hf download "
        + name + "`) and copy its cache folder models--" + name.replace("/", "--") + f" into {cache} here "
        "(or point HF_HOME / HF_HUB_CACHE at a copied cache); or download to a folder "
        "(`huggingface-cli download " + name + " --local-dir DIR`), copy DIR here and pass DIR instead of the id.")
    return "\n".join(lines)


def resolve_model(name_or_path: str | os.PathLike[str], kind: str = "model",
                  required: tuple[str, ...] = ("config.json",)) -> Path:
    """A local folder/file holding the weights of ``name_or_path``.

    An existing path is returned as is (a folder must contain every file in ``required``). Otherwise a Hugging Face
    id is looked up in the cache only. Raises :class:`ModelNotFoundError` with instructions when nothing is found.
    """
    name = str(name_or_path)
    p = Path(name).expanduser()
    if p.exists():
        missing = [f for f in required if p.is_dir() and not (p / f).exists()]
        if missing:
            raise ModelNotFoundError(missing_model_message(
                name, kind, f"The folder {p.resolve()} exists but lacks {', '.join(missing)} "
                            "(not a save_pretrained / Hugging Face model folder)."))
        return p.resolve()
    if looks_like_path(name):
        raise ModelNotFoundError(missing_model_message(name, kind, f"No such file or folder: {p.resolve()}."))
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError

    try:
        folder = Path(snapshot_download(name, local_files_only=True, cache_dir=str(hf_cache_dir())))
    except (FileNotFoundError, OSError, HFValidationError) as exc:  # LocalEntryNotFoundError is a FileNotFoundError
        raise ModelNotFoundError(missing_model_message(name, kind)) from exc
    missing = [f for f in required if not (folder / f).exists()]
    if missing:
        raise ModelNotFoundError(missing_model_message(
            name, kind, f"The cached snapshot {folder} lacks {', '.join(missing)} (an incomplete download)."))
    return folder


def torch_dtype(name: str | None) -> "object":
    """``"float32" | "fp32" | "float16" | "fp16" | "bfloat16" | "bf16" | None`` -> torch dtype (None -> float32)."""
    import torch

    table = {None: torch.float32, "": torch.float32, "float32": torch.float32, "fp32": torch.float32,
             "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
             "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
    key = name.lower() if isinstance(name, str) else name
    if key not in table:
        raise ValueError(f"unknown dtype {name!r}; use float32, float16 or bfloat16")
    return table[key]
