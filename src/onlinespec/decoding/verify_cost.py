"""What a verify forward costs on this machine, and how many drafted tokens are worth verifying at that price.

A verify step runs one target forward over 1 + n tokens (the last committed token and n drafts). Its cost
relative to a one-token forward, c(1 + n), depends on the machine far more than on the model: measured with
SmolLM2-135M in float32 at a 200-token prefix, 1/3/5/8 tokens cost 1/1.28/1.95/2.2 steps on an Intel Xeon
(avx512) and 1/2.07/1.83/1.71 on an AMD EPYC (avx2; docs/benchmarks.md). A draft length chosen on one machine
is wrong on the other, so the engine measures c once (`measure_verify_cost`, cached on disk per model, dtype,
threads and CPU) and cuts each proposal to the length that the rule below expects to pay.

The rule (`worth_verifying`), with a_i the estimated chance that drafted token i is accepted once tokens < i are:
token i is kept iff every token before it was kept and, judging only by what is known before x_i is read
(x_{<i} and q_i, never x_i itself), some length n >= i gives more expected new tokens per unit of verify cost
than stopping before i:
    max_{n >= i} (E_{<i} + P_i sum_{t=i..n} a^(t-i+1)) / c(n + 1)  >  E_{<i} / c(i),
where P_i = prod_{j<i} min(q_j(x_j), r_j) estimates that tokens < i are all accepted, E_{<i} = 1 + sum_{t<i}
P_{t+1} the expected new tokens with tokens < i (the 1 is the target's own token) and a = min(max q_i, r_i) the
estimate for token i and the tokens after it (unknown yet). r_j is the acceptance rate observed at depth j in
this engine's earlier steps (`AcceptanceRates`), kept apart per source of the proposal (`Proposal.source`: the
hybrid's request lookup, earlier traffic and head are calibrated very differently, `SourceAcceptance`): a draft's q
is not always calibrated (the lookup's is an n-gram frequency, often 1 after a single match, while about half of
its tokens are accepted), and past steps are fixed before this one is drafted, so using them keeps the rule blind
to x_i. Because the cut at token i never looks at
x_i, every kept token is still a draw from its q, and exact speculative sampling holds (greedy output is the
target's whatever is verified). Looking ahead to n > i lets a curve that falls with more tokens (as on the EPYC)
keep long proposals while cutting short ones.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from onlinespec.decoding.draft import Proposal
from onlinespec.decoding.kv_cache import new_cache, rollback
from onlinespec.models.attention import FOLDED, SDPA, attention_kind
from onlinespec.models.machine_cache import read_measurement, write_measurement
from onlinespec.models.weight_layout import PACKED, weight_layout

MEASURED_TOKENS = 9  # forwards over 1..9 tokens are timed: drafts of up to k = 8 tokens
PREFIX_TOKENS = 128  # the measured forwards extend a cache of this many positions (a typical prompt's order)
REPEATS = 3  # each size is timed this many times, interleaved with the others; the fastest counts
VERIFY_COST_MODES = ("auto", "off")  # auto: measure once (cached) and cut proposals by it; off: verify all


@dataclass(frozen=True)
class VerifyCost:
    """relative[n - 1] = time of one target forward over n new tokens / time over 1 (so relative[0] == 1)."""

    relative: tuple[float, ...]
    source: str = ""  # where it came from ("measured", the cache file, or "" when given)
    one_token_ms: float = 0.0  # the measured one-token forward, for reports (0 when not measured)

    def of(self, tokens: int) -> float:
        """c(tokens); beyond the measured sizes the curve grows linearly with the last measured slope (at least
        flat), so very long proposals are never assumed free."""
        if tokens <= len(self.relative):
            return self.relative[tokens - 1]
        last, prev = self.relative[-1], self.relative[-2] if len(self.relative) > 1 else self.relative[-1]
        return last + max(last - prev, 0.0) * (tokens - len(self.relative))

    def to_dict(self) -> dict:
        return {"relative": list(self.relative), "source": self.source, "one_token_ms": self.one_token_ms}


class AcceptanceRates:
    """r_j: the share of drafted tokens at depth j (0-based) accepted when every token before them was, over
    earlier verify steps, with exponential forgetting (every verify step multiplies all weights by DECAY);
    1.0 (no correction) while a depth's weight is under MIN_WEIGHT. Forgetting at every step, reached or not,
    is what lets a depth that the rule stopped verifying be tried again (about 125 steps after a steady state):
    a draft that learns online may have got better there."""

    DECAY = 0.98  # a memory of about 50 steps
    MIN_WEIGHT = 4.0

    def __init__(self) -> None:
        self.accepted: list[float] = []
        self.reached: list[float] = []

    def to_dict(self) -> dict:
        return {"accepted": list(self.accepted), "reached": list(self.reached)}

    def load_dict(self, saved: dict) -> None:
        """Continue from `to_dict()`'s output (a resumed benchmark decides its cuts as the uninterrupted run)."""
        self.accepted, self.reached = [float(w) for w in saved["accepted"]], [float(w) for w in saved["reached"]]

    def rate(self, depth: int) -> float:
        if depth >= len(self.reached) or self.reached[depth] < self.MIN_WEIGHT:
            return 1.0
        return self.accepted[depth] / self.reached[depth]

    def observe(self, verified: int, accepted: int) -> None:
        """One verify step: `verified` drafted tokens, the first `accepted` of them accepted."""
        while len(self.reached) < verified:
            self.accepted.append(0.0)
            self.reached.append(0.0)
        self.reached = [w * self.DECAY for w in self.reached]
        self.accepted = [w * self.DECAY for w in self.accepted]
        for depth in range(min(verified, accepted + 1)):  # depths that were reached: all before them accepted
            self.reached[depth] += 1.0
            self.accepted[depth] += 1.0 if depth < accepted else 0.0


class SourceAcceptance:
    """`AcceptanceRates` per proposal source (`Proposal.source`; "" for drafts with one source). One pooled
    memory let a source that is rarely right (the head on a domain it never saw: about 0.1 of its first tokens)
    cap the rates of one that is mostly right (the request's own text: about 0.75) and cut its proposals too."""

    def __init__(self) -> None:
        self.sources: dict[str, AcceptanceRates] = {}

    def of(self, source: str = "") -> AcceptanceRates:
        """The memory of one source (created empty: no correction until it has steps)."""
        return self.sources.setdefault(source, AcceptanceRates())

    def observe(self, verified: int, accepted: int, source: str = "") -> None:
        """One verify step of `source` (decays only that source's memory: a source's own steps, cut or not, are
        what let its cut depths be tried again)."""
        self.of(source).observe(verified, accepted)

    def to_dict(self) -> dict:
        return {"sources": {name: rates.to_dict() for name, rates in self.sources.items()}}

    def load_dict(self, saved: dict) -> None:
        """Continue from `to_dict()`'s output; a pooled memory saved before sources existed loads as source ""."""
        self.sources = {}
        for name, rates in saved.get("sources", {"": saved}).items():
            self.of(name).load_dict(rates)


def worth_verifying(drawn_q: list[float], max_q: list[float], cost: VerifyCost) -> int:
    """How many of the m drafted tokens to verify (module docstring). drawn_q[i] = q_i(x_i), max_q[i] = max q_i;
    the decision for token i reads drawn_q[:i] and max_q[i] only."""
    expected, prefix = 1.0, 1.0  # E_{<i} and P_i for i = 0
    for i, a in enumerate(max_q):
        stop = expected / cost.of(i + 1)
        gain, reach, best = expected, prefix, 0.0
        for n in range(i, len(max_q)):
            reach *= a
            gain += reach
            best = max(best, gain / cost.of(n + 2))
        if best <= stop:
            return i
        prefix *= drawn_q[i]
        expected += prefix
    return len(max_q)


def cut_proposal(proposal: Proposal, cost: VerifyCost, rates: AcceptanceRates | None = None) -> Proposal:
    """`proposal` cut to the length `worth_verifying` keeps (the same object when nothing is cut), with each
    token's q capped by the rate observed at its depth when `rates` is given."""
    m = proposal.tokens.shape[0]
    if m == 0:
        return proposal
    q = proposal.probs if proposal.probs is not None else torch.softmax(proposal.logits.float(), dim=-1)  # [m, V]
    drawn = q.gather(1, proposal.tokens[:, None])[:, 0].tolist()
    top = q.max(dim=-1).values.tolist()
    if rates is not None:
        caps = [rates.rate(i) for i in range(m)]
        drawn = [min(d, c) for d, c in zip(drawn, caps, strict=True)]
        top = [min(t, c) for t, c in zip(top, caps, strict=True)]
    n = worth_verifying(drawn, top, cost)
    if n == m:
        return proposal
    probs = None if proposal.probs is None else proposal.probs[:n]
    return Proposal(tokens=proposal.tokens[:n], logits=proposal.logits[:n], probs=probs, source=proposal.source)


@torch.inference_mode()
def measure_verify_cost(
    target: torch.nn.Module, sizes: int = MEASURED_TOKENS, progress: str = "", prefix: int = PREFIX_TOKENS
) -> VerifyCost:
    """Time target forwards over 1..sizes new tokens on a cache of `prefix` random positions (REPEATS rounds,
    sizes interleaved, the fastest of each kept) and return their costs relative to one token. A non-empty
    `progress` shows a progress bar on stderr with that description."""
    from tqdm import tqdm

    vocab = int(target.config.vocab_size)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (1, prefix + sizes), generator=gen)
    cache = new_cache(target)
    target(input_ids=ids[:, :prefix], past_key_values=cache, use_cache=True, logits_to_keep=1)
    best = [float("inf")] * sizes
    rounds = tqdm(range(REPEATS + 1), desc=progress, unit="round", file=sys.stderr, disable=not progress, leave=False)
    for round_no in rounds:  # round 0 warms the kernels up and is not kept
        for n in range(1, sizes + 1):
            tic = time.perf_counter()
            target(input_ids=ids[:, prefix : prefix + n], past_key_values=cache, use_cache=True)
            elapsed = time.perf_counter() - tic
            rollback(cache, prefix)
            if round_no > 0:
                best[n - 1] = min(best[n - 1], elapsed)
    return VerifyCost(tuple(round(b / best[0], 4) for b in best), source="measured", one_token_ms=best[0] * 1e3)


def cached_verify_cost(target: torch.nn.Module, cache_dir: Path) -> VerifyCost:
    """The measured curve for this model, dtype, weight layout, attention kind, torch thread count and CPU:
    read from `cache_dir` when measured before, else measured now (seconds for the embedded model; under a minute
    for a 1.5B target) and saved."""
    extra = {"sizes": MEASURED_TOKENS, "weight_layout": weight_layout(target)}
    if extra["weight_layout"] == PACKED:  # its forwards got cheaper when packed siblings shared one product
        extra["packed"] = "siblings grouped"
    if (attention := attention_kind(target)) != SDPA:  # the curve's forwards run another kernel
        extra["attention"] = attention  # (SDPA keeps the key measurements made before it existed had)
    if attention == FOLDED:  # its verify forwards got cheaper when the mask came folded once per forward
        extra["mask"] = "folded once per forward"
    saved = read_measurement(cache_dir, "verify-cost", target, extra)
    try:
        return VerifyCost(tuple(saved["relative"]), source=saved["source"], one_token_ms=saved.get("one_token_ms", 0.0))
    except (KeyError, TypeError):
        pass  # not measured yet (or an unreadable file): measure
    cost = measure_verify_cost(target, progress="measuring this machine's verify cost (once; cached)")
    record = {"relative": list(cost.relative), "one_token_ms": cost.one_token_ms}
    path = write_measurement(cache_dir, "verify-cost", target, record, extra)
    return replace(cost, source=str(path))
