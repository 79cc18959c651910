"""Export a saved EAGLE-3 head in the checkpoint layout vLLM and SGLang load (`LlamaForCausalLMEagle3`).

What the engines run (read from their sources; no code taken from them): vLLM
vllm/model_executor/models/llama_eagle3.py @ 00bd1493 and SGLang python/sglang/srt/models/llama_eagle3.py @
03d5a777 compute, for one draft layer, h = fc(concat(aux_low, aux_mid, aux_high)) (fc without bias, 3d -> d), then
x = concat(input_layernorm(embed(x_{t+1})), hidden_norm(h)), attention whose q/k/v read 2d columns (no bias),
residual h, post_attention_layernorm + MLP with its residual, a final `norm`, and their own `lm_head` over
`draft_vocab_size` tokens, mapped to target ids by `d2t` (draft index i -> target id i + d2t[i]). The pre-norm
output is the next step's h. Both loaders read the layer as `midlayer.*`, `fc.weight`, `norm.weight`,
`lm_head.weight`, `d2t` (and skip `t2d`), and take the token embeddings from the target when the checkpoint has
none. That is exactly onlinespec's Eagle3Head (drafts/eagle3.py), so the export is exact, reduced vocabulary
included, in both engines: the checkpoint is the same for `--format vllm` and `--format sglang`.

Aux layers: both engines' default selection is the inputs of target layers (2, L // 2, L - 3) (vLLM: llama.py
`get_eagle3_aux_hidden_state_layers`; SGLang: `set_eagle3_layers_to_capture` with no ids), which is what our heads
read by default. Explicit ids in a config are counted differently by the two (SGLang adds one), so only heads on
the default layers export; the config records them for the reader (`onlinespec.aux_layers`) without asking either
engine to move them.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from onlinespec.atomic import atomic_directory
from onlinespec.drafts.eagle3 import default_aux_layers
from onlinespec.drafts.head_store import CONFIG, VOCAB_KEY, WEIGHTS
from onlinespec.errors import UserError
from onlinespec.export.eagle import check_shape, engine_config, read_exportable_head
from onlinespec.models.attention import head_shape

ARCHITECTURE = "LlamaForCausalLMEagle3"
SUPPORTED_TARGETS = ("LlamaForCausalLM", "Qwen2ForCausalLM")  # the draft layer is Llama-shaped for both
LAYER_PARAMS = (
    "self_attn.q_proj.weight",
    "self_attn.k_proj.weight",
    "self_attn.v_proj.weight",
    "self_attn.o_proj.weight",
    "mlp.gate_proj.weight",
    "mlp.up_proj.weight",
    "mlp.down_proj.weight",
    "input_layernorm.weight",
    "hidden_norm.weight",
    "post_attention_layernorm.weight",
)


def expected_shapes(cfg, draft_vocab: int) -> dict[str, tuple[int, ...]]:
    """Shapes of an EAGLE-3 head's saved tensors (head names) for a target with config `cfg`."""
    d, inter = cfg.hidden_size, cfg.intermediate_size
    heads, kv_heads, head_dim = head_shape(cfg)
    q, kv = heads * head_dim, kv_heads * head_dim
    layer = {
        "self_attn.q_proj.weight": (q, 2 * d),
        "self_attn.k_proj.weight": (kv, 2 * d),
        "self_attn.v_proj.weight": (kv, 2 * d),
        "self_attn.o_proj.weight": (d, q),
        "mlp.gate_proj.weight": (inter, d),
        "mlp.up_proj.weight": (inter, d),
        "mlp.down_proj.weight": (d, inter),
        "input_layernorm.weight": (d,),
        "hidden_norm.weight": (d,),
        "post_attention_layernorm.weight": (d,),
    }
    shapes = {f"layer.{name}": shape for name, shape in layer.items()}
    shapes |= {"fc.weight": (d, 3 * d), "norm.weight": (d,), "lm_head.weight": (draft_vocab, d)}
    return shapes


def engine_tensors(tensors: dict[str, torch.Tensor], target_vocab: int) -> dict[str, torch.Tensor]:
    """Head tensors -> the engines' names, with the draft-to-target id map `d2t` and its inverse mask `t2d`."""
    lm_head = tensors["lm_head.weight"]
    ids = tensors.get(VOCAB_KEY, torch.arange(lm_head.shape[0])).long()
    t2d = torch.zeros(target_vocab, dtype=torch.bool)
    t2d[ids] = True
    out = {
        "fc.weight": tensors["fc.weight"].contiguous(),
        "norm.weight": tensors["norm.weight"].contiguous(),
        "lm_head.weight": lm_head.contiguous(),
        "d2t": (ids - torch.arange(ids.numel())).contiguous(),  # target id = draft index + d2t[index]
        "t2d": t2d,
    }
    for name in LAYER_PARAMS:
        out[f"midlayer.{name}"] = tensors[f"layer.{name}"].contiguous()
    return out


def export_eagle3(head_dir: str | Path, out_dir: str | Path, target, fmt: str = "vllm") -> Path:
    """Write the EAGLE-3 head saved in `head_dir` to `out_dir` for engine `fmt` (vllm or sglang: one layout).

    target: the loaded target model, its config, or a model spec. Atomic. Returns out_dir. Raises UserError for
    anything a user can fix.
    """
    saved, tensors, cfg = read_exportable_head(head_dir, out_dir, target, fmt, "eagle3", "EAGLE-3", SUPPORTED_TARGETS)
    head_dir, out_dir = Path(head_dir), Path(out_dir)
    draft_vocab = int(saved.get("draft_vocab_size") or cfg.vocab_size)
    for name, shape in expected_shapes(cfg, draft_vocab).items():
        check_shape(tensors, name, shape, head_dir)
    aux = tuple(saved.get("aux_layers") or ())
    default = default_aux_layers(cfg.num_hidden_layers)
    if aux != default:
        raise UserError(
            f"the head in '{head_dir}' reads target layers {list(aux)}, not the engines' default {list(default)}: "
            "vLLM and SGLang count explicit layer ids differently, so only default-layer heads export"
        )
    weights = engine_tensors(tensors, cfg.vocab_size)
    provenance = {
        "source_head": str(head_dir),
        "format": fmt,
        "head_kind": "eagle3",
        "exact": True,
        "draft_vocab_size": draft_vocab,
        "aux_layers": list(aux),
    }
    config = engine_config(cfg, fmt, weights["fc.weight"].dtype, provenance)
    config.update(
        architectures=[ARCHITECTURE],
        draft_vocab_size=draft_vocab,
        target_hidden_size=cfg.hidden_size,
        tie_word_embeddings=False,  # its own LM head (`lm_head.weight`), never the embeddings
        attention_bias=False,
        mlp_bias=False,
    )
    with atomic_directory(out_dir) as tmp:
        save_file(weights, str(tmp / WEIGHTS), metadata={"format": "pt"})
        (tmp / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    return out_dir
