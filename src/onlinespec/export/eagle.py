"""Export a saved EAGLE head in the checkpoint layout vLLM and SGLang load for EAGLE(-1/-2) speculative decoding.

What the engines run (read from their sources; references below, no code taken from them): the draft is one
decoder layer of the target's family on top of `fc(concat(embedding(x_{t+1}), f_t))`, where f_t is the target's
last-layer feature after its final norm. The first (only) layer has no input norm, and its output goes straight
into the target's LM head, with no final norm. Embeddings and LM head are the target's, shared at load time, so the
checkpoint holds only `fc` and `layers.0.*`.

Our EagleHead concatenates (f_t, e) rather than (e, f_t): export swaps the two column halves of `fc.weight`, which
is exact. A head of layout "eagle1" (`onlinespec warmup --eagle-layout eagle1`) has neither the layer's input norm
nor the final norm, so the engines compute exactly the function trained here. The default layout ("onlinespec")
has both; no engine parameter can hold them (RMSNorm divides by a per-token scale, which no linear weight folds
into), so such a head exports only with `inexact=True`: both norms are dropped, the engines then draft with a
different function, and acceptance drops (outputs stay exact: the engines verify every token).

Formats (the layouts differ, so both are written on request):
- vllm: config `architectures: ["LlamaForCausalLM"]`; vLLM's EAGLEConfig renames it to EagleLlamaForCausalLM
  (vllm/transformers_utils/configs/eagle.py @ 23c5aa92). Its `fc` has no bias and its loader looks every name up in
  the model's parameters (vllm/model_executor/models/llama_eagle.py @ e1c4a552: `fc` bias=False, layer 0's
  input_layernorm replaced by Identity, load_weights prefixes "model." and fuses q/k/v and gate/up; the same at
  00da9231, which also skips unknown names), so the checkpoint has exactly `fc.weight` and `layers.0.*` without
  `input_layernorm`. vLLM's EAGLE-1 model has no reduced draft vocabulary (LogitsProcessor over `vocab_size`, the
  target's LM head), so a reduced-vocabulary head exports only with `drop_draft_vocab=True`: the engine then
  drafts over the full vocabulary (tokens the head never learned to rank are not masked any more).
- sglang: config `architectures: ["LlamaForCausalLMEagle"]` (SGLang picks the class by name and does not rename a
  Llama draft: python/sglang/srt/configs/model_config.py @ 001adf56, _config_draft_model). Its `fc` has a bias
  (python/sglang/srt/models/llama_eagle.py @ 034b3be8: nn.Linear(2d, d), layer 0's input_layernorm replaced by
  the identity, load_weights prefixes "model."), so a zero `fc.bias` is written. `tie_word_embeddings` is false so
  that the draft's LM head is its own module; SGLang replaces embedding and LM head with the target's
  (python/sglang/srt/speculative/eagle_worker.py @ 00559eac, set_embed_and_head). A reduced vocabulary is exact
  there: the ids go to `hot_token_map.pt` (a list of ints, read by spec_utils.load_token_map with torch.load), and
  `--speculative-token-map DIR/hot_token_map.pt` makes SGLang slice the target's LM head to those rows.
Reference EAGLE-1 head: SafeAILab/EAGLE eagle/model/cnets1.py @ 2174a790 (no input norm on layer 0, fc with bias
over concat(embeddings, features), output passed to the base model's LM head).

Only Llama-architecture targets are exported (the engine classes above are the Llama ones).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from onlinespec.atomic import atomic_directory
from onlinespec.drafts.head_store import CONFIG, VOCAB_KEY, WEIGHTS, read_head
from onlinespec.errors import UserError
from onlinespec.models.attention import head_shape

FORMATS = ("vllm", "sglang")
ARCHITECTURES = {"vllm": "LlamaForCausalLM", "sglang": "LlamaForCausalLMEagle"}
SUPPORTED_TARGETS = ("LlamaForCausalLM",)
TOKEN_MAP = "hot_token_map.pt"
LAYER_PARAMS = (
    "self_attn.q_proj.weight",
    "self_attn.k_proj.weight",
    "self_attn.v_proj.weight",
    "self_attn.o_proj.weight",
    "mlp.gate_proj.weight",
    "mlp.up_proj.weight",
    "mlp.down_proj.weight",
    "post_attention_layernorm.weight",
)
INPUT_NORM = "layer.input_layernorm.weight"


def target_config(target) -> tuple[object, str]:
    """(transformers config, architecture name) of the target: a loaded model, a config, or a model spec (loaded)."""
    if isinstance(target, str):
        from onlinespec.models import load_model

        target = load_model(target).model
    if isinstance(target, nn.Module):  # a model built in memory has no `architectures` yet (as in head_store)
        return target.config, (target.config.architectures or [type(target).__name__])[0]
    return target, (getattr(target, "architectures", None) or ["?"])[0]


def expected_shapes(cfg) -> dict[str, tuple[int, ...]]:
    """Shapes of a head's trainable tensors (head names) for a Llama target with config `cfg`."""
    d, inter = cfg.hidden_size, cfg.intermediate_size
    heads, kv_heads, head_dim = head_shape(cfg)
    q, kv = heads * head_dim, kv_heads * head_dim
    shapes = {
        "fc.weight": (d, 2 * d),
        "self_attn.q_proj.weight": (q, d),
        "self_attn.k_proj.weight": (kv, d),
        "self_attn.v_proj.weight": (kv, d),
        "self_attn.o_proj.weight": (d, q),
        "mlp.gate_proj.weight": (inter, d),
        "mlp.up_proj.weight": (inter, d),
        "mlp.down_proj.weight": (d, inter),
        "post_attention_layernorm.weight": (d,),
    }
    return {name if name == "fc.weight" else f"layer.{name}": shape for name, shape in shapes.items()}


def engine_tensors(tensors: dict[str, torch.Tensor], fmt: str) -> dict[str, torch.Tensor]:
    """Head tensors -> the engine's names; fc columns reordered from (feature, embedding) to (embedding, feature)."""
    fc = tensors["fc.weight"]
    d = fc.shape[0]
    out = {"fc.weight": torch.cat([fc[:, d:], fc[:, :d]], dim=1).contiguous()}
    if fmt == "sglang":
        out["fc.bias"] = torch.zeros(d, dtype=fc.dtype)
    for name in LAYER_PARAMS:
        out[f"layers.0.{name}"] = tensors[f"layer.{name}"].contiguous()
    return out


def engine_config(cfg, fmt: str, dtype: torch.dtype, provenance: dict) -> dict:
    """The target's config turned into a one-layer EAGLE draft config the engine reads."""
    config = cfg.to_dict()
    for key in ("_name_or_path", "transformers_version", "id2label", "label2id"):
        config.pop(key, None)
    dtype_name = str(dtype).removeprefix("torch.")
    rope = config.get("rope_parameters") or {}
    config.update(
        architectures=[ARCHITECTURES[fmt]],
        model_type="llama",
        num_hidden_layers=1,
        torch_dtype=dtype_name,  # transformers 4 (the engines' pinned versions) reads torch_dtype
        dtype=dtype_name,
        onlinespec=provenance,
    )
    if rope and "rope_theta" not in config:  # transformers 5 writes rope_parameters only; 4 reads these two
        config["rope_theta"] = rope.get("rope_theta")
        config["rope_scaling"] = None if rope.get("rope_type", "default") == "default" else dict(rope)
    if fmt == "sglang":
        config["tie_word_embeddings"] = False  # its own LM head module, replaced by the target's at load time
    return config


def _is_export(directory: Path) -> bool:
    """True for a directory this module wrote (the only kind export replaces)."""
    try:
        return "onlinespec" in json.loads((directory / CONFIG).read_text())
    except (OSError, ValueError):
        return False


def read_exportable_head(
    head_dir: str | Path, out_dir: str | Path, target, fmt: str, kind: str, label: str, supported: tuple[str, ...]
) -> tuple[dict, dict[str, torch.Tensor], object]:
    """The checks every head export makes before writing: format, directories, head kind, target architecture and
    sizes. Returns (saved config, saved tensors, the target's transformers config); a UserError for anything a user
    can fix."""
    if fmt not in FORMATS:
        raise UserError(f"unknown export format '{fmt}': choose one of {', '.join(FORMATS)}")
    head_dir, out_dir = Path(head_dir), Path(out_dir)
    if not head_dir.is_dir():
        raise UserError(f"head directory '{head_dir}' does not exist")
    if out_dir.exists() and not _is_export(out_dir):
        raise UserError(f"'{out_dir}' exists and is not an earlier export: choose a new --out directory")
    saved, tensors = read_head(head_dir)
    if saved.get("kind") != kind:
        raise UserError(f"'{head_dir}' holds a {saved.get('kind')} head: only {label} heads export to vLLM/SGLang")
    cfg, arch = target_config(target)
    if saved.get("target_architecture") not in supported or arch not in supported:
        raise UserError(
            f"{label} heads export for {', '.join(supported)} targets (the engines' classes): the head was trained "
            f"for {saved.get('target_architecture')}, the target is {arch}"
        )
    if saved.get("hidden_size") != cfg.hidden_size or saved.get("target_vocab_size") != cfg.vocab_size:
        raise UserError(
            f"the head in '{head_dir}' was trained for a target with hidden size {saved.get('hidden_size')} and "
            f"vocabulary {saved.get('target_vocab_size')}; this target has {cfg.hidden_size} and {cfg.vocab_size}"
        )
    return saved, tensors, cfg


def check_shape(tensors: dict[str, torch.Tensor], name: str, shape: tuple[int, ...], head_dir: Path) -> None:
    """A UserError unless the saved head holds `name` with `shape`."""
    if name not in tensors or tuple(tensors[name].shape) != shape:
        got = tuple(tensors[name].shape) if name in tensors else "missing"
        raise UserError(f"the head in '{head_dir}' does not fit this target: {name} is {got}, needs {shape}")


def export_eagle(
    head_dir: str | Path,
    out_dir: str | Path,
    target,
    fmt: str = "vllm",
    *,
    inexact: bool = False,
    drop_draft_vocab: bool = False,
) -> Path:
    """Write the EAGLE head saved in `head_dir` to `out_dir` in engine format `fmt` (vllm or sglang).

    target: the loaded target model, its config, or a model spec. Atomic: written to a temporary directory and
    renamed into place. Returns out_dir. Raises UserError for anything a user can fix.
    """
    saved, tensors, cfg = read_exportable_head(head_dir, out_dir, target, fmt, "eagle", "EAGLE", SUPPORTED_TARGETS)
    head_dir, out_dir = Path(head_dir), Path(out_dir)
    for name, shape in expected_shapes(cfg).items():
        check_shape(tensors, name, shape, head_dir)
    layout = saved.get("layout", "onlinespec")
    exact = layout == "eagle1"
    if not exact and not inexact:
        raise UserError(
            f"the head in '{head_dir}' has layout '{layout}' (an input norm in its layer and the final norm before "
            "the LM head), which vLLM/SGLang do not compute: warm up with --eagle-layout eagle1 for an exact export, "
            "or pass --inexact to drop both norms (lower acceptance in the engine)"
        )
    reduced = VOCAB_KEY in tensors
    if reduced and fmt == "vllm" and not drop_draft_vocab:
        raise UserError(
            f"the head in '{head_dir}' drafts over {saved.get('draft_vocab_size')} of {cfg.vocab_size} tokens and "
            "vLLM's EAGLE-1 model has no reduced vocabulary: use --format sglang (exact, with a token map) or pass "
            "--drop-draft-vocab to let vLLM draft over the full vocabulary"
        )
    provenance = {
        "source_head": str(head_dir),
        "format": fmt,
        "head_layout": layout,
        "exact": exact and not (reduced and fmt == "vllm"),
        "draft_vocab_size": saved.get("draft_vocab_size"),
        "token_map": TOKEN_MAP if reduced and fmt == "sglang" else None,
    }
    weights = engine_tensors(tensors, fmt)
    config = engine_config(cfg, fmt, weights["fc.weight"].dtype, provenance)

    with atomic_directory(out_dir) as tmp:
        save_file(weights, str(tmp / WEIGHTS), metadata={"format": "pt"})
        (tmp / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
        if provenance["token_map"]:
            torch.save(tensors[VOCAB_KEY].tolist(), tmp / TOKEN_MAP)
    return out_dir
