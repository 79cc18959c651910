"""The lookup draft: propose what followed the context's longest suffix, in this request or in earlier traffic.

No model and no gradient. Two n-gram indexes (drafts/ngram_index.py) of orders min_ngram..max_ngram:
- the REQUEST index: the current request's prompt and committed tokens (prompt-lookup decoding), rebuilt per request;
- the SHARED index: the prompts and verified outputs of earlier requests, bounded by `max_entries`. Only the
  counting session (online/counting_session.py) adds to it, at round boundaries, from requests that were not
  private; it is saved and restored with `--draft-state` (`state_tensors` / `load_state`).

Proposal rule, one token at a time (the context = committed tokens + the tokens drafted so far):
- match the longest suffix of the context, n = max_ngram down to min_ngram; at each n the request index is asked
  first, then the shared one (prompt lookup wins at equal length);
- q = the empirical frequencies of that context's continuations, count(next) / total, over the TARGET's vocabulary
  (logits log q; ids never seen after it get -inf). Greedy decoding drafts the most frequent continuation (ties:
  the one seen last); sampling draws it from q after the request's logits processing, so exact speculative
  sampling holds (method.md §1) whatever q is;
- stop at k tokens, at a context nothing matches, or before a token whose largest q, times the q of the tokens
  already drafted, falls below `min_confidence` (the draft's own estimate that the chain would be accepted that
  far: a rejected verify position still costs target compute). The rule looks only at tokens already drawn, so
  every proposed token is still a draw from its q. With nothing to propose, the step is a plain target step.

Cost per step: a few dict look-ups per drafted token and one [k, V] logits tensor; no forward pass.
"""

from __future__ import annotations

import hashlib
import json
import math

import torch

from onlinespec.decoding.draft import Proposal
from onlinespec.decoding.sampling import SamplingConfig, probs_from_logits, sample
from onlinespec.decoding.tree import TreeConfig, TreeProposal
from onlinespec.drafts.causal_lm import target_vocab_size
from onlinespec.drafts.ngram_index import NgramIndex
from onlinespec.drafts.registry import DraftSpec
from onlinespec.models.resolve import LoadedModel

MAX_NGRAM = 4
MIN_NGRAM = 1
MAX_ENTRIES = 200_000  # about 70 MB (ngram_index.py); `lookup:N:E` sets another cap
MIN_CONFIDENCE = 0.3  # stop once the chain's estimated acceptance (product of q) falls below this; not tuned yet
STATE_FORMAT = 1


class LookupDraft:
    """Chain drafting from n-gram counts of this request and of earlier traffic (module docstring)."""

    wants_target_hidden = False
    supports_tree = False

    def __init__(
        self,
        target_vocab_size: int,
        max_ngram: int = MAX_NGRAM,
        min_ngram: int = MIN_NGRAM,
        max_entries: int = MAX_ENTRIES,
        min_confidence: float = MIN_CONFIDENCE,
        tokenizer: object | None = None,
        name: str = "lookup",
        shared_min_ngram: int | None = None,
    ) -> None:
        """shared_min_ngram: the shortest context the SHARED index keeps and matches (default min_ngram): earlier
        traffic is weaker evidence than the request's own text, so a caller may ask it for a longer match."""
        self.vocab = target_vocab_size
        self.name = name
        self.min_confidence = min_confidence
        self.shared = NgramIndex(shared_min_ngram or min_ngram, max_ngram, max_entries)
        self.request = NgramIndex(min_ngram, max_ngram)  # bounded by the request's length
        self._tokens: list[int] = []  # the current request's committed tokens, as indexed so far
        self._tokenizer = tokenizer
        self._fingerprint: str | None = None
        self.last_source: str | None = None  # which index matched the last proposal's first token ("request", "shared")

    # --- Draft (decoding/draft.py) -------------------------------------------------------------------------------
    def begin(self, prompt_ids: torch.Tensor, features: torch.Tensor | None = None) -> None:
        """A new request: its index starts from its prompt (LongTensor [T])."""
        self.request.clear()
        self._tokens = prompt_ids.tolist()
        self.request.add(self._tokens)

    def propose(
        self,
        ids: torch.Tensor,
        k: int,
        sampling: SamplingConfig,
        generator: torch.Generator | None,
        use_shared: bool = True,
    ) -> Proposal:
        """ids: LongTensor [L] committed tokens -> a Proposal of 0..k tokens, logits/probs [n, V]. use_shared=False
        matches the request index only (the hybrid's gate, drafts/source_gate.py)."""
        seen = len(self._tokens)
        if ids.shape[0] > seen:  # index the tokens committed since the last step
            self._tokens.extend(ids[seen:].tolist())
            self.request.add(self._tokens, start=seen)
        context = ids[-self.shared.max_ngram :].tolist()
        logits = torch.full((k, self.vocab), -math.inf)  # [k, V], one allocation: rows are filled as drafted
        tokens: list[int] = []
        probs: list[torch.Tensor] = []
        confidence = 1.0
        self.last_source = None
        for i in range(k):
            counts, source = self._match(context, use_shared)
            if counts is None:
                break
            self.last_source = self.last_source or source
            total = sum(counts.values())
            # q over the target vocabulary, into row i (left out of the proposal if the chain stops here)
            logits[i, list(counts)] = torch.tensor([math.log(c / total) for c in counts.values()])
            if sampling.greedy:
                token = max(reversed(counts), key=counts.__getitem__)  # the most frequent; ties: seen last
                q_token = best = counts[token] / total
            else:
                q = probs_from_logits(logits[i : i + 1], sampling)[0]  # [V]: what the verifier is told q is
                best = float(q.max())
            # Decided BEFORE drawing: keeping or dropping a token after seeing it would bias the kept tokens away
            # from q, and exact sampling needs every proposed token to be a draw from the q reported with it.
            if confidence * best < self.min_confidence:
                break
            if not sampling.greedy:
                token = int(sample(q[None], generator)[0])
                q_token = float(q[token])
                probs.append(q)
            confidence *= q_token
            tokens.append(token)
            context = (context + [token])[-self.shared.max_ngram :]
        n = len(tokens)
        return Proposal(
            tokens=torch.tensor(tokens, dtype=torch.long),
            logits=logits[:n],
            probs=None if sampling.greedy else (torch.stack(probs) if n else logits[:0].clone()),
        )

    def _match(self, context: list[int], use_shared: bool = True) -> tuple[dict[int, int] | None, str | None]:
        """The continuation counts of the longest suffix of `context` either index knows (the request's first),
        and which index it was."""
        for n in range(min(self.shared.max_ngram, len(context)), self.request.min_ngram - 1, -1):
            suffix = tuple(context[-n:])
            if counts := self.request.get(suffix):
                return counts, "request"
            if use_shared and (counts := self.shared.get(suffix)):
                return counts, "shared"
        return None, None

    def propose_tree(self, ids: torch.Tensor, tree: TreeConfig, max_depth: int) -> TreeProposal:
        raise NotImplementedError("the lookup draft proposes chains only (supports_tree = False)")

    def commit(self, num_accepted: int, features: torch.Tensor | None = None) -> None:
        """Nothing to roll back: the next proposal indexes whatever was committed."""

    # --- CountingDraft (online/counting_draft.py) ------------------------------------------------------------------
    def learn(self, requests: list[torch.Tensor]) -> dict[str, float]:
        """Add each request's committed tokens (LongTensor [L]) to the shared index."""
        evicted = self.shared.evicted
        added = sum(self.shared.add(ids.tolist()) for ids in requests)
        return {
            "index_added": added,
            "index_evicted": self.shared.evicted - evicted,
            "index_learned_tokens": sum(ids.shape[0] for ids in requests),
            **{f"index_{key}": value for key, value in self.memory().items()},
        }

    def memory(self) -> dict[str, float]:
        """The shared index: entries, contexts, approximate bytes, and the cap."""
        return {
            "entries": self.shared.entries,
            "contexts": len(self.shared),
            "bytes": self.shared.nbytes,
            "max_entries": self.shared.max_entries or 0,
        }

    def describe(self) -> dict:
        """What a saved index must match to be loaded here."""
        return {
            "format": STATE_FORMAT,
            "vocab_size": self.vocab,
            "tokenizer": self.fingerprint(),
            "min_ngram": self.shared.min_ngram,
            "max_ngram": self.shared.max_ngram,
        }

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return self.shared.state_tensors()

    def load_state(self, tensors: dict[str, torch.Tensor], info: dict) -> None:
        mine = self.describe()
        for key, what in (
            ("format", "state format"),
            ("vocab_size", "vocabulary size"),
            ("tokenizer", "tokenizer (sha256 of its vocabulary)"),
            ("min_ngram", "shortest n-gram"),
            ("max_ngram", "longest n-gram"),
        ):
            if info.get(key) != mine[key]:
                raise ValueError(f"it was saved with {what} {info.get(key)!r}, this draft has {mine[key]!r}")
        index = NgramIndex(self.shared.min_ngram, self.shared.max_ngram, self.shared.max_entries)
        index.load_tensors(tensors, self.vocab)  # into a new index: a refused state leaves the live one as it was
        self.shared = index

    def fingerprint(self) -> str | None:
        """sha256 of the tokenizer's vocabulary (token -> id), computed once; None without a tokenizer."""
        if self._fingerprint is None and self._tokenizer is not None:
            vocab = sorted(self._tokenizer.get_vocab().items())
            self._fingerprint = hashlib.sha256(json.dumps(vocab).encode()).hexdigest()
        return self._fingerprint


def make_lookup_draft(spec: DraftSpec, target: LoadedModel, dtype: str) -> LookupDraft:
    """`lookup`, `lookup:N` (longest n-gram) or `lookup:N:E` (and at most E index entries); the registry checked
    the numbers' syntax. The target fixes the vocabulary and the tokenizer; dtype is unused (no model)."""
    numbers = [int(x) for x in spec.argument.split(":")] if spec.argument else []
    max_ngram = numbers[0] if numbers else MAX_NGRAM
    max_entries = numbers[1] if len(numbers) > 1 else MAX_ENTRIES
    return LookupDraft(
        target_vocab_size(target),
        max_ngram=max_ngram,
        min_ngram=min(MIN_NGRAM, max_ngram),
        max_entries=max_entries,
        tokenizer=target.tokenizer,
        name=spec.text,
    )
