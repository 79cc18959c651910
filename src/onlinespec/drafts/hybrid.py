"""The hybrid draft: the lookup draft's proposal where the text repeats itself, a head draft's everywhere else.

Per verify step (every proposed token is still verified by the target, so the output stays the target's):
- ask the lookup draft (drafts/lookup.py: the longest suffix match in this request, then in earlier traffic) for
  up to k tokens from a match of at least `min_match` tokens; if it proposes any, verify those;
- otherwise ask the head draft (by default the EAGLE head bundled for the target) for min(k, head_k) tokens.
A lookup match is often right for a long span (code and text that copy earlier text), a head's guesses fade with
depth, and a verify over more positions costs more: so k caps the lookup's chain and `head_k` (HEAD_K) the head's.
The lookup costs a few dict look-ups; the head costs k small forwards, paid only on the steps it drafts. The
head's chain is cut before the first token whose estimated acceptance (the product of the head's q along the chain,
the lookup's rule) falls below `head_min_confidence`: a rejected position still costs verify compute. Measured
(benchmarks/bench_vs_hf.py, fp32, 12 prompts of 3 streams): k = 2 with no cut 1.25x our autoregressive path, with
a cut at 0.2 or 0.4 1.36x (HEAD_MIN_CONFIDENCE = 0.2: the better of the two on Spider).
A match of one token is weak evidence (a common token is followed by many things), so a lookup proposal needs a
match of two or more tokens in the request (MIN_MATCH) and of four in earlier traffic (SHARED_MIN_MATCH): on the
quick preset with `ogd`, shared matches from 2 tokens on cost tau where the head was right (tau 1.786, last third
1.027x static), from 3 tokens on 1.813 / 1.076x, from 4 tokens 1.818 / 1.087x (the head learning alone:
1.818 / 1.037x).

Earlier traffic is gated (drafts/source_gate.py): every proposal is scored one step later by how far the target
committed it, per source (this request's text, earlier traffic, the head), and the shared index drafts only while
its recent score is at least the head's, so a new domain that earlier traffic does not resemble falls back to the
head. `report()` gives the per-source counts (the bench saves them per round).

Both drafts keep their request state: the head is told every committed token and the target's features at every
`commit`, whichever draft proposed (an EAGLE head feeds the features it has not seen at its next proposal).
Online learning (online/hybrid_session.py) trains both parts: the head by gradient (the hybrid is a
`TrainableDraft` through it) and the lookup's shared index of earlier traffic by counting (a `CountingDraft`
through it), so text the server has seen before is drafted by lookup in later requests.

Trees (`--tree static|dynamic`, greedy only): a lookup match is still one chain, verified as a chain; where nothing
matches, the head drafts its candidate tree, verified in one forward. Measured on the avx512_bf16 EPYC (bf16, 6
prompts of HumanEval, Spider and WritingBench, 96 tokens, one run; docs/benchmarks.md): tau 2.31-2.52 against the
chain's 1.96, yet 0.82-0.89x its speed, because a verify over up to 25 positions costs 1.4 one-token steps there
and the head's tree takes a small forward per level: the chain stays the default; a machine where a wide verify is
nearly free (a GPU) is where the tree pays.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import torch

from onlinespec.decoding.draft import Proposal
from onlinespec.decoding.sampling import SamplingConfig
from onlinespec.decoding.tree import TreeConfig, TreeProposal, top_path
from onlinespec.drafts.causal_lm import target_vocab_size
from onlinespec.drafts.head_draft import HeadDraft
from onlinespec.drafts.lookup import LookupDraft
from onlinespec.drafts.registry import DraftSpec, make_draft
from onlinespec.drafts.source_gate import SourceGate
from onlinespec.errors import UserError
from onlinespec.models.resolve import LoadedModel
from onlinespec.online.feedback_buffer import RequestExamples
from onlinespec.online.trainable_draft import ExampleTerm

MIN_MATCH = 2  # the shortest suffix match whose continuation the hybrid drafts instead of the head's
SHARED_MIN_MATCH = 4  # the shortest match in EARLIER traffic's index (online learning) that drafts instead of the head
HEAD_K = 2  # the head's chain length: the bundled EAGLE head's fastest k (README)
HEAD_MIN_CONFIDENCE = 0.2  # cut the head's chain before a token whose estimated acceptance falls below this
DEFAULT_HEAD = "eagle"
GREEDY = SamplingConfig()  # the shared index's held-back proposal is its most frequent continuation (no draw)


class HybridDraft:
    """Lookup where it matches, the head elsewhere (module docstring). Scores each source's proposals."""

    supports_tree = True  # the head's tree where the lookup does not match (propose_tree)

    def __init__(
        self,
        lookup: LookupDraft,
        head: HeadDraft,
        name: str = "hybrid",
        head_k: int = HEAD_K,
        head_min_confidence: float = HEAD_MIN_CONFIDENCE,
        gate_shared: bool = True,
    ) -> None:
        self.lookup = lookup
        self.head = head
        self.head_k = head_k
        self.head_min_confidence = head_min_confidence
        self.name = name
        self.wants_target_hidden = head.wants_target_hidden
        self.feature_layers = head.feature_layers
        self.gate = SourceGate(enabled=gate_shared)

    @property
    def steps(self) -> dict[str, int]:
        """Verify steps drafted by the lookup (either index) and by the head, since the draft was built."""
        scores = self.gate.scores
        return {"lookup": scores["request"].steps + scores["shared"].steps, "head": scores["head"].steps}

    def report(self) -> dict:
        """Per-source counts and scores (drafts/source_gate.py)."""
        return self.gate.report()

    # --- Draft (decoding/draft.py) ---------------------------------------------------------------------------
    def begin(self, prompt_ids: torch.Tensor, features: torch.Tensor | None = None) -> None:
        """A new request: prompt_ids LongTensor [T]; features [T, F] for the head."""
        self.lookup.begin(prompt_ids)
        self.head.begin(prompt_ids, features)
        self.gate.forget()

    def propose(
        self, ids: torch.Tensor, k: int, sampling: SamplingConfig, generator: torch.Generator | None
    ) -> Proposal:
        """ids [L] committed tokens -> the lookup's proposal (1..k tokens) if it matches (earlier traffic's only
        while the gate is open), else the head's min(k, head_k). The gate is decided before anything is drawn."""
        matched = self._lookup_proposal(ids, k, sampling, generator)
        if matched is not None:
            return matched
        proposal = self.head.propose(ids, min(k, self.head_k), sampling, generator)
        self.gate.proposed("head", ids, proposal.tokens, drafted=True)
        return replace(self._confident_prefix(proposal), source="head")

    def propose_tree(self, ids: torch.Tensor, tree: TreeConfig, max_depth: int) -> TreeProposal | Proposal:
        """Greedy only (the engine refuses trees when sampling). ids [L] -> the lookup's chain of up to max_depth
        tokens where it matches, exactly as `propose` (verified as a chain), else the head's candidate tree of
        depth <= max_depth, verified in one forward. A match is one long guess; where there is none the head's
        guesses fade with depth, and a tree spends the verify's spare positions on its other likely branches. The
        gate scores the tree's most probable chain (what the head would have drafted as a chain)."""
        matched = self._lookup_proposal(ids, max_depth, GREEDY, None)
        if matched is not None:
            return matched
        candidates = self.head.propose_tree(ids, tree, max_depth)
        self.gate.proposed("head", ids, top_path(candidates), drafted=True)
        return candidates

    def _lookup_proposal(
        self, ids: torch.Tensor, k: int, sampling: SamplingConfig, generator: torch.Generator | None
    ) -> Proposal | None:
        """The lookup's proposal of 1..k tokens continuing ids [L], tagged with its source, or None (no match).
        Settles the gate first; with earlier traffic's index gated out, its would-be proposal is scored anyway so
        that the gate can reopen."""
        self.gate.settle(ids)
        shared_open = self.gate.shared_open()
        proposal = self.lookup.propose(ids, k, sampling, generator, use_shared=shared_open)
        if proposal.tokens.numel():
            self.gate.proposed(self.lookup.last_source, ids, proposal.tokens, drafted=True)
            return replace(proposal, source=self.lookup.last_source)  # the engine keeps acceptance per source
        if not shared_open:  # score what earlier traffic would have drafted, so the gate can reopen
            held_back = self.lookup.propose(ids, k, GREEDY, None)
            if held_back.tokens.numel() and self.lookup.last_source == "shared":
                self.gate.proposed("shared", ids, held_back.tokens, drafted=False)
        return None

    def _confident_prefix(self, proposal: Proposal) -> Proposal:
        """The head's chain up to (not including) the first token i where prod_{j<i} q_j(x_j) * max q_i falls below
        `head_min_confidence` (the lookup's rule, drafts/lookup.py). Token i's cut depends only on the tokens before
        it and on q_i, never on x_i itself: each kept token is still a draw from its q (exact sampling holds)."""
        if self.head_min_confidence <= 0 or not proposal.tokens.numel():
            return proposal
        q = proposal.probs if proposal.probs is not None else torch.softmax(proposal.logits, dim=-1)  # [n, V]
        confidence, n = 1.0, 0
        for i, token in enumerate(proposal.tokens.tolist()):
            if confidence * float(q[i].max()) < self.head_min_confidence:
                break
            confidence *= float(q[i, token])
            n = i + 1
        probs = None if proposal.probs is None else proposal.probs[:n]
        return Proposal(tokens=proposal.tokens[:n], logits=proposal.logits[:n], probs=probs)

    def commit(self, num_accepted: int, features: torch.Tensor | None = None) -> None:
        """Both drafts learn what was committed (the head its features, whoever proposed)."""
        self.lookup.commit(num_accepted)
        self.head.commit(num_accepted, features)

    # --- TrainableDraft (online/trainable_draft.py) and TargetReadout: the head is what learns -----------------
    @property
    def model(self) -> torch.nn.Module:
        return self.head.model

    @property
    def trainable(self) -> list[str]:
        return self.head.trainable

    def example_terms(self, call: Callable[..., object], ex: RequestExamples) -> list[ExampleTerm]:
        return self.head.example_terms(call, ex)

    def draft_ids(self, target_ids: torch.Tensor) -> torch.Tensor:
        return self.head.draft_ids(target_ids)

    def target_logits(self, features: torch.Tensor) -> torch.Tensor:
        return self.head.target_logits(features)

    # --- CountingDraft (online/counting_draft.py): the lookup's shared index is what counts ---------------------
    def learn(self, requests: list[torch.Tensor]) -> dict[str, float]:
        return self.lookup.learn(requests)

    def memory(self) -> dict[str, float]:
        return self.lookup.memory()

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return self.lookup.state_tensors()

    def describe(self) -> dict:
        return self.lookup.describe()

    def load_state(self, tensors: dict[str, torch.Tensor], info: dict) -> None:
        self.lookup.load_state(tensors, info)


def make_hybrid_draft(spec: DraftSpec, target: LoadedModel, dtype: str) -> HybridDraft:
    """`hybrid` (lookup + the bundled EAGLE head) or `hybrid:HEAD` with HEAD any head spec (`eagle:DIR`, ...)."""
    head_spec = spec.argument or DEFAULT_HEAD
    head = make_draft(head_spec, target, dtype)
    if not isinstance(head, HeadDraft):
        raise UserError(
            f"bad draft spec '{spec.text}': after 'hybrid:' give a head draft (eagle, eagle3, medusa, hydra, with :DIR "
            f"or :fresh), not '{head_spec}'"
        )
    lookup = LookupDraft(
        target_vocab_size(target), min_ngram=MIN_MATCH, shared_min_ngram=SHARED_MIN_MATCH, tokenizer=target.tokenizer
    )
    return HybridDraft(lookup, head, name=spec.text)
