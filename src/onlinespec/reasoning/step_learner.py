"""Online preference learning of a step draft: pairs buffered per round, Adam steps per round, state kept.

Methods: "dpo" (the paper's Online-LR) and "sft" (online SFT on the chosen steps, the baseline). The reference
model is the current draft: it moves every round (the draft at the round's start). With one optimiser step per
round (the default) the reference log-probs are the policy's own before the step, so they are the policy's values
detached (one forward per sequence, not two); at that point the DPO gradient is
-beta/2 (grad log pi(y_w|x) - grad log pi(y_l|x)) per pair. With `steps_per_update` > 1 the reference is computed
once, without gradients, before the round's steps.

Weights: the full model, or LoRA adapters (`lora_rank` > 0, through `peft`) on the attention projections. The
optimiser state is kept across rounds and saved with the weights (online/state_store.py), so a killed run resumes.
Updates happen between problems: a StepWriter's cache holds keys and values of the old weights, so writers are
made per problem after the update, never kept across one.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import torch

from onlinespec.errors import UserError
from onlinespec.reasoning.lookahead import PreferencePair
from onlinespec.reasoning.preference import dpo_loss, sft_loss, step_logprob

LEARN_METHODS = ("dpo", "sft")
LORA_TARGETS = ("q_proj", "v_proj")


@dataclass(frozen=True)
class StepLearnerConfig:
    method: str = "dpo"
    lr: float = 1e-5
    beta: float = 0.1  # DPO temperature (the paper's 0.1)
    clip: float = 1.0  # gradient-norm clip (the paper's 1.0)
    lora_rank: int = 0  # 0: all weights; r > 0: LoRA adapters of rank r on LORA_TARGETS
    max_step_tokens: int = 128  # a chosen or rejected step is cut to this many draft tokens
    steps_per_update: int = 1  # optimiser steps per round on the round's pairs (the reference: the round's start)

    def check(self) -> None:
        if self.method not in LEARN_METHODS:
            raise UserError(f"unknown learning method '{self.method}': choose one of {', '.join(LEARN_METHODS)}")
        if not self.lr > 0 or not self.beta > 0 or not self.clip > 0:
            raise UserError(f"--lr, --beta and --clip must be > 0 (got {self.lr}, {self.beta}, {self.clip})")
        if self.steps_per_update < 1:
            raise UserError(f"--steps-per-update must be >= 1, got {self.steps_per_update}")
        if self.lora_rank < 0:
            raise UserError(f"--lora-rank must be >= 0 (0 = all weights), got {self.lora_rank}")


@dataclass(frozen=True)
class EncodedPair:
    """A preference pair in the draft's tokens."""

    context: list[int]
    chosen: list[int]
    rejected: list[int]


class StepPreferenceLearner:
    """Owns the draft model's trainable weights and optimiser. `model` is what writers must use (with LoRA, the
    peft wrapper around the given model)."""

    def __init__(self, model, tokenizer, config: StepLearnerConfig) -> None:
        config.check()
        self.config, self.tokenizer = config, tokenizer
        if config.lora_rank > 0:
            from peft import LoraConfig, get_peft_model

            lora = LoraConfig(r=config.lora_rank, lora_alpha=2 * config.lora_rank, target_modules=list(LORA_TARGETS))
            model = get_peft_model(model, lora)
        else:
            model.requires_grad_(True)
        self.model = model
        self.params = {name: p for name, p in model.named_parameters() if p.requires_grad}
        self.optimizer = torch.optim.Adam(self.params.values(), lr=config.lr)
        self.buffer: list[EncodedPair] = []
        self.updates = 0

    def encode(self, context_ids: list[int], pair: PreferencePair) -> EncodedPair:
        cut = self.config.max_step_tokens

        def ids(text: str) -> list[int]:
            return self.tokenizer(text, add_special_tokens=False)["input_ids"][:cut]

        return EncodedPair(list(context_ids), ids(pair.chosen), ids(pair.rejected))

    def add(self, context_ids: list[int], pair: PreferencePair) -> None:
        """Buffer a pair; `context_ids` = the draft writer's ids_of(pair.context)."""
        encoded = self.encode(context_ids, pair)
        if encoded.chosen and (self.config.method == "sft" or encoded.rejected):
            self.buffer.append(encoded)

    def update(self) -> dict:
        """One optimiser step on the buffered pairs (then emptied); returns loss, pairs, grad norm, seconds."""
        pairs, self.buffer = self.buffer, []
        if not pairs:
            return {"pairs": 0, "loss": None, "grad_norm": None, "seconds": 0.0}
        t0 = time.perf_counter()
        self.model.train(False)
        reference = self._reference(pairs) if self.config.steps_per_update > 1 else None
        losses, norms = [], []
        for _ in range(self.config.steps_per_update):
            loss, norm = self._step(pairs, reference)
            losses.append(loss)
            norms.append(norm)
        self.updates += 1
        return {
            "pairs": len(pairs),
            "loss": losses[0],
            "loss_last": losses[-1],
            "grad_norm": norms[0],
            "seconds": time.perf_counter() - t0,
        }

    @torch.no_grad()
    def _reference(self, pairs: list[EncodedPair]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(log ref(y_w|x), log ref(y_l|x)) per pair: the draft as it is before this round's steps."""
        return [
            (
                step_logprob(self.model, p.context, p.chosen),
                step_logprob(self.model, p.context, p.rejected) if p.rejected else torch.tensor(0.0),
            )
            for p in pairs
        ]

    def _step(self, pairs: list[EncodedPair], reference) -> tuple[float, float]:
        """One clipped Adam step on all pairs; (loss, gradient norm before clipping)."""
        self.optimizer.zero_grad(set_to_none=True)
        total = 0.0
        chosen_tokens = torch.tensor(float(sum(len(p.chosen) for p in pairs)))
        for i, p in enumerate(pairs):  # one backward per pair keeps one sequence's activations in memory at a time
            chosen = step_logprob(self.model, p.context, p.chosen)
            if self.config.method == "sft":
                loss = sft_loss(chosen[None], chosen_tokens)
            else:
                rejected = step_logprob(self.model, p.context, p.rejected)
                # reference = the draft at the round's start; with one step per round that is the policy itself,
                # whose log-probs detached are the reference's (one forward per sequence, not two)
                ref_w, ref_l = reference[i] if reference is not None else (chosen.detach(), rejected.detach())
                loss = dpo_loss(chosen[None], rejected[None], ref_w[None], ref_l[None], self.config.beta) / len(pairs)
            loss.backward()
            total += float(loss.detach())
        grad_norm = torch.nn.utils.clip_grad_norm_(list(self.params.values()), self.config.clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return total, float(grad_norm)

    # --- state (online/state_store.py layout: draft tensors, learner tensors, info) ---

    def state(self) -> tuple[dict[str, torch.Tensor], dict, dict]:
        moments: dict[str, dict[str, torch.Tensor]] = {"exp_avg": {}, "exp_avg_sq": {}, "step": {}}
        for name, p in self.params.items():
            for key in moments:
                if key in self.optimizer.state.get(p, {}):
                    moments[key][name] = self.optimizer.state[p][key]
        learner = {**moments, "updates": self.updates, "buffer": [asdict(p) for p in self.buffer]}
        return {n: p.detach() for n, p in self.params.items()}, learner, {"config": asdict(self.config)}

    def load(self, tensors: dict[str, torch.Tensor], learner: dict) -> None:
        missing = set(self.params) - set(tensors)
        if missing:
            raise UserError(
                f"the saved draft state lacks {len(missing)} tensors (e.g. {sorted(missing)[0]}): it was "
                "saved with other settings (--lora-rank, another draft); use a new --draft-state directory"
            )
        with torch.no_grad():
            for name, p in self.params.items():
                p.copy_(tensors[name])
        for name, p in self.params.items():
            if name in learner["exp_avg"]:
                self.optimizer.state[p] = {k: learner[k][name].clone() for k in ("exp_avg", "exp_avg_sq", "step")}
        self.updates = int(learner["updates"])
        self.buffer = [EncodedPair(**p) for p in learner["buffer"]]
