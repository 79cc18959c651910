"""A draft that is itself a transformers causal LM (an independent small LM, or a layer-skip view of the target).

`CausalLMDraft` implements the engine's `Draft` (decoding/draft.py) and online learning's `TrainableDraft`
(online/trainable_draft.py).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from onlinespec.decoding.draft import Proposal
from onlinespec.decoding.kv_cache import new_cache, rollback
from onlinespec.decoding.sampling import SamplingConfig
from onlinespec.drafts.chain import ChainRecorder
from onlinespec.models.resolve import LoadedModel
from onlinespec.online.feedback_buffer import RequestExamples
from onlinespec.online.trainable_draft import ExampleTerm


def target_vocab_size(target: LoadedModel) -> int:
    """V: the rows of the target's LM head (may exceed its tokenizer's vocabulary)."""
    return target.model.get_output_embeddings().weight.shape[0]


class CausalLMDraft:
    """Chain drafting with its own KV cache, rolled back to the accepted prefix after every verify step."""

    wants_target_hidden = False
    supports_tree = False

    def __init__(
        self, model: torch.nn.Module, target_vocab_size: int, name: str, trainable: list[str] | None = None
    ) -> None:
        self.model = model
        self.name = name
        # Names of the parameters an online learner may change (default: all); the rest stay frozen.
        self.trainable = trainable if trainable is not None else [n for n, _ in model.named_parameters()]
        self.target_vocab_size = target_vocab_size
        self.cache = None
        self.cached_len = 0  # positions of the committed sequence held in self.cache
        self._base_len = 0  # length of the committed sequence at the last propose
        self._k = 0

    def begin(self, prompt_ids: torch.Tensor, features: torch.Tensor | None = None) -> None:
        self.cache = new_cache(self.model)
        self.cached_len = 0
        self._k = 0

    def _next_logits(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Feed input_ids [n] through the cache; return the draft's logits for the next token, [V_target]."""
        out = self.model(input_ids=input_ids[None], past_key_values=self.cache, use_cache=True, logits_to_keep=1)
        logits = out.logits[0, -1]
        extra = self.target_vocab_size - logits.shape[-1]
        # Tokens the draft cannot produce get q = 0; tokens beyond the target's vocabulary can never be accepted.
        return F.pad(logits, (0, extra), value=float("-inf")) if extra > 0 else logits[: self.target_vocab_size]

    def propose(
        self, ids: torch.Tensor, k: int, sampling: SamplingConfig, generator: torch.Generator | None
    ) -> Proposal:
        """ids: LongTensor [L] committed tokens. Feeds what the cache lacks, then drafts k tokens one by one."""
        step_input = ids[self.cached_len :]
        chain = ChainRecorder(sampling, generator)
        for _ in range(k):
            step_logits = self._next_logits(step_input)
            token = chain.choose(step_logits)
            step_input = token
        self._base_len, self._k = ids.shape[0], k
        self.cached_len = ids.shape[0] + k - 1  # the last drafted token was never fed
        return chain.proposal()

    # --- training (online/draft_objective.py) ----------------------------------------------------------------
    def example_terms(self, call: Callable[..., object], ex: RequestExamples) -> list[ExampleTerm]:
        """One request's training terms: [(weight, logits [P, Vd] at its positions, rows 0..P-1)].

        call(**kwargs) runs the (training copy of the) model with the learner's parameters."""
        logits = call(input_ids=ex.context_ids[None], logits_to_keep=torch.tensor(ex.pred_index), use_cache=False)
        return [(1.0, logits.logits[0], list(range(len(ex.pred_index))))]

    def draft_ids(self, target_ids: torch.Tensor) -> torch.Tensor:
        """Target token ids -> the draft's own logit columns; -1 where the draft's vocabulary lacks them."""
        vocab = self.model.get_output_embeddings().weight.shape[0]
        return target_ids.masked_fill(target_ids >= vocab, -1)

    def commit(self, num_accepted: int, features: torch.Tensor | None = None) -> None:
        if self._k == 0:  # a plain target step (no proposal since the last commit): nothing drafted to undo
            return
        self.cached_len = self._base_len + min(num_accepted, self._k - 1)
        rollback(self.cache, self.cached_len)
        self._k = 0
