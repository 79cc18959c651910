"""Resolve a model spec to a loaded (model, tokenizer) pair.

A spec is one of: an embedded name (`smollm2-135m`), a path to a `.gguf` file, a local model directory, or a
Hugging Face hub id (loaded with the usual `from_pretrained`, so it works offline once cached).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from onlinespec.errors import UserError
from onlinespec.models.attention import use_attention
from onlinespec.models.dtype_choice import AUTO, auto_dtype
from onlinespec.models.embedded import EMBEDDED, embedded_model_dir
from onlinespec.models.machine_cache import measurements_dir
from onlinespec.models.weight_layout import use_weight_layout

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DTYPE_CHOICES = (AUTO, *DTYPES)  # auto: the faster of float32 and bfloat16 here (models/dtype_choice.py)


@dataclass
class LoadedModel:
    spec: str
    model: torch.nn.Module  # a transformers causal LM, in eval mode
    tokenizer: object  # a transformers tokenizer
    dtype: str = "float32"  # the dtype the model runs in (what `auto` resolved to)
    dtype_reason: str = ""  # for `auto`: why (measured, no bf16 instructions, $ONLINESPEC_AUTO_DTYPE)


def parse_dtype(name: str) -> torch.dtype:
    """The torch dtype of a name in DTYPES (`auto` is resolved by `load_model`, not here)."""
    if name not in DTYPES:
        raise UserError(f"unknown dtype '{name}': choose one of {', '.join(DTYPE_CHOICES)}")
    return DTYPES[name]


def _looks_like_path(spec: str) -> bool:
    return spec.startswith((".", "/", "~")) or spec.count("/") > 1 or Path(spec).exists()


def load_model(
    spec: str, dtype: str | torch.dtype = "float32", weight_layout: str = "standard", attention: str = "auto"
) -> LoadedModel:
    """Load the causal LM and tokenizer named by `spec` (see module docstring) in `dtype` (a name of DTYPES, a
    torch dtype, or "auto": the faster of float32 and bfloat16 on this machine, models/dtype_choice.py), its linear
    weights in `weight_layout` (models/weight_layout.py: "standard" as loaded, "transposed", or "auto"), its
    attention by `attention` (models/attention.py: "auto" folds grouped query heads where a reduced-precision
    model gains by it here, "sdpa", "folded")."""
    # an unknown name fails here, before anything is loaded; auto loads float32 and decides after
    torch_dtype = dtype if isinstance(dtype, torch.dtype) else torch.float32 if dtype == AUTO else parse_dtype(dtype)
    if not spec or not spec.strip():
        raise UserError("empty model spec: give an embedded name (smollm2-135m), a directory, a .gguf file or a hub id")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs: dict = {}
    if spec in EMBEDDED:
        source = str(embedded_model_dir(spec))
    elif spec.endswith(".gguf"):
        path = Path(spec).expanduser()
        if not path.is_file():
            raise UserError(f"GGUF file '{spec}' does not exist")
        source, kwargs = str(path.parent), {"gguf_file": path.name}
    elif _looks_like_path(spec) and not Path(spec).expanduser().exists():
        raise UserError(f"model directory '{spec}' does not exist")
    else:
        source = str(Path(spec).expanduser()) if _looks_like_path(spec) else spec
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype, **kwargs)
    except (OSError, ValueError, KeyError, ImportError) as exc:
        reason = str(exc).strip().splitlines()[0].rstrip(".") if str(exc).strip() else type(exc).__name__
        raise UserError(
            f"could not load model '{spec}': {reason}. A model spec is an embedded name "
            f"({', '.join(EMBEDDED)}), a local model directory, a .gguf file, or a Hugging Face hub id"
        ) from exc
    model.eval()
    model.requires_grad_(False)
    reason = ""
    if dtype == AUTO:  # loaded in float32 above; measured (or read) here, then converted if bf16 is faster
        name, how = auto_dtype(model, measurements_dir())
        reason = how["reason"]
        if name != "float32":
            model.to(DTYPES[name])
    else:
        name = {t: n for n, t in DTYPES.items()}.get(torch_dtype, str(torch_dtype).removeprefix("torch."))
    use_weight_layout(model, weight_layout, measurements_dir())
    use_attention(model, attention, measurements_dir())
    return LoadedModel(spec=spec, model=model, tokenizer=tokenizer, dtype=name, dtype_reason=reason)
