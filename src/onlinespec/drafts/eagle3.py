"""EAGLE-3 draft head (docs/heads.md "EAGLE-3"): the EAGLE head that fuses low, middle and high target layers.

Features: the target's hidden states at `aux_layers` (transformers' `hidden_states` indices: the input of those
layers; by default (2, L // 2, L - 3) of L layers, the layers vLLM and SGLang read) and, last, its final hidden
state after the norm (used only to read the target's own logits, online/prompt_feedback.py): F = 4d columns.

Head step at position t, with h_t = fc(concat(a_t, b_t, c_t)) [d] for committed positions (the three aux states)
and h_t = g_{t-1}, the head's own previous output, while drafting ahead:
    x = concat(input_norm(e(x_{t+1})), hidden_norm(h_t))       [2d]
    r = h_t + attention(x)                                      (q/k/v read 2d columns, no bias)
    g_t = r + mlp(post_attention_norm(r))                       [d], the next step's h
    logits = lm_head(norm(g_t))                                 [Vd], its own LM head over the draft vocabulary
This is the function vLLM's and SGLang's `LlamaForCausalLMEagle3` compute (onlinespec/export/eagle3.py), so a
head exports exactly. Trainable: fc, the layer (both norms in it), the final norm and the LM head (initialised from
the target's); shared and frozen: the token embeddings and the rotary embedding. Training-time test, drafting
(chain and tree) and online learning are EAGLE's (drafts/eagle.py `UnrolledFeatureHead`, `EagleDraft`).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from onlinespec.drafts.eagle import UnrolledFeatureHead
from onlinespec.drafts.head_parts import DraftVocab, decoder_of, init_linear_weights


def default_aux_layers(num_layers: int) -> tuple[int, int, int]:
    """The target layers whose inputs an EAGLE-3 head fuses: low, middle, high (vLLM's and SGLang's default)."""
    return (min(2, num_layers - 1), num_layers // 2, max(num_layers - 3, 0))


class Eagle3Head(UnrolledFeatureHead):
    """An EAGLE-3 head for `target`. B = batch, q = steps, d = hidden size, Vd = draft vocabulary size."""

    kind = "eagle3"
    layout_keys: tuple[str, ...] = ("aux_layers", "unroll")

    def __init__(
        self,
        target: nn.Module,
        vocab_ids: torch.Tensor | None = None,
        aux_layers: tuple[int, ...] | list[int] | None = None,
        unroll: int = 1,
    ) -> None:
        super().__init__()
        config = target.config
        base = decoder_of(target)
        layers = len(base.layers)
        aux = tuple(int(i) for i in (aux_layers if aux_layers is not None else default_aux_layers(layers)))
        if len(aux) != 3 or not all(0 <= i < layers for i in aux):
            raise ValueError(f"an EAGLE-3 head fuses 3 target layers in [0, {layers}), got {aux}")
        if unroll < 1:
            raise ValueError(f"an EAGLE-3 head's unroll must be >= 1, got {unroll}")
        self.aux_layers = aux
        self.unroll = unroll
        self.feature_layers = (*aux, -1)
        d = config.hidden_size
        dtype = base.norm.weight.dtype
        self.fc = nn.Linear(3 * d, d, bias=False)
        self.layer = type(base.layers[0])(config, layer_idx=0)
        attention = self.layer.self_attn
        for name in ("q_proj", "k_proj", "v_proj"):  # attention reads concat(embedding, hidden): 2d columns
            old = getattr(attention, name)
            setattr(attention, name, nn.Linear(2 * d, old.out_features, bias=False))
        self.layer.hidden_norm = type(self.layer.input_layernorm)(d, eps=config.rms_norm_eps)
        vocab = DraftVocab(target.get_output_embeddings(), vocab_ids)
        self.lm_head = nn.Linear(d, vocab.size, bias=False)
        init_linear_weights(self, getattr(config, "initializer_range", 0.02))  # before any shared module is attached
        with torch.no_grad():  # the LM head and final norm start as the target's (rows of the draft vocabulary)
            target_rows = target.get_output_embeddings().weight
            self.lm_head.weight.copy_(target_rows[vocab.ids] if vocab.reduced else target_rows)
        self.vocab = vocab
        self.norm = copy.deepcopy(base.norm).requires_grad_(True)
        for module in (self.fc, self.layer, self.lm_head, self.norm):
            module.to(dtype=dtype)
        self.embed = target.get_input_embeddings()
        self.rotary = base.rotary_emb

    @staticmethod
    def feature_layers_for(target: nn.Module) -> tuple[int, ...]:
        """The features a default head for `target` reads (warm-up's teacher passes need them before the head)."""
        return (*default_aux_layers(len(decoder_of(target).layers)), -1)

    def trainable_names(self) -> list[str]:
        return [n for n, _ in self.named_parameters() if n.startswith(("fc.", "layer.", "lm_head.", "norm."))]

    def store_config(self) -> dict:
        """Layout settings saved beside the weights (drafts/head_store.py)."""
        return {"aux_layers": list(self.aux_layers), "unroll": self.unroll}

    def lift(self, features: torch.Tensor) -> torch.Tensor:
        """The target's features [..., 4d] (aux layers, then the final normed state) -> h [..., d]."""
        d = self.fc.out_features
        return self.fc(features[..., : 3 * d])

    def step(self, hidden, next_ids, positions, cache=None, mask=None) -> torch.Tensor:
        """hidden h [B, q, d], next_ids [B, q], positions [B, q] -> head outputs g [B, q, d] (pre-norm)."""
        layer = self.layer
        with torch.no_grad():
            embedded = self.embed(next_ids)  # frozen: no gradient flows into the target's embeddings
        x = torch.cat([layer.input_layernorm(embedded), layer.hidden_norm(hidden)], dim=-1)
        attended, _ = layer.self_attn(
            hidden_states=x,
            position_embeddings=self.rotary(hidden, positions),
            attention_mask=mask,
            past_key_values=cache,
        )
        residual = hidden + attended
        return residual + layer.mlp(layer.post_attention_layernorm(residual))

    def draft_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """g [..., d] -> logits [..., Vd] over the draft vocabulary (the head's own LM head)."""
        return self.lm_head(self.norm(hidden))
