"""Decode one prompt stream with every method, interleaved, and keep per-round records (docs/method.md §1-2).

Fairness: one process, one target model; for each prompt every method decodes it in turn with the same settings,
so machine drift hits all methods alike. Every learning method starts from the same warm draft (a fresh
`make_draft(spec)` each) and learns with the synchronous schedule: its update runs between requests and its time is
counted (a background update would slow the other methods' decoding). A round is `round_size` prompts for every
method, so all methods cross round boundaries together and a checkpoint is written after each round.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from itertools import groupby
from pathlib import Path

import torch

from onlinespec.bench.checkpoint import Checkpoint
from onlinespec.bench.methods import method_config, split_method
from onlinespec.bench.prompts import Prompt, Stream
from onlinespec.decoding.config import GenerationConfig
from onlinespec.decoding.metrics import RequestStats
from onlinespec.decoding.tree import TreeConfig
from onlinespec.drafts import DEFAULT_DRAFT, make_draft
from onlinespec.drafts.source_gate import counts_between, source_counts
from onlinespec.errors import UserError
from onlinespec.models import DEFAULT_MODEL, LoadedModel, load_model
from onlinespec.models.attention import attention_kind
from onlinespec.models.weight_layout import weight_layout
from onlinespec.online.counting_draft import COUNT
from onlinespec.online.learners import LEARNERS
from onlinespec.online.session import OnlineConfig
from onlinespec.pipeline import Pipeline
from onlinespec.prompting import encode_prompt

WARMUP_TOKENS = 4  # one untimed request per method before timing, so start-up costs don't land on the first method
REFERENCE = "ar"  # plain autoregressive decoding: the speedup reference and the greedy-equality reference
METHODS = (REFERENCE, *LEARNERS, COUNT)  # the plain names; a learner may also carry settings (bench/methods.py)
_PER_METHOD = ("learner", "round_requests", "round_tokens", "state_dir", "save_every", "telemetry")
# Fields of the online session's round record that the benchmark's own round record replaces.
_SESSION_FIELDS = {"round", "learner", "requests", "tokens", "tau", "alpha", "decode_s", "update_blocking_s"}


@dataclass
class BenchSettings:
    """Everything that decides what a run measures; recorded in results.json and checked on --resume."""

    methods: tuple[str, ...]
    stream: str  # stream name, or the --prompts source
    max_new_tokens: int
    round_size: int
    k: int
    preset: str = "custom"
    target: str = DEFAULT_MODEL
    draft: str = DEFAULT_DRAFT
    dtype: str = "auto"  # models/dtype_choice.py: the faster of float32 and bfloat16 here
    verify_cost: str = "auto"  # Pipeline.use_verify_cost: cut proposals to what this machine's verify cost pays
    weight_layout: str = "auto"  # models/weight_layout.py: the target's linear weights as the faster layout here
    attention: str = "auto"  # models/attention.py: folded query heads where faster here
    chat: bool = True
    seed: int = 0
    online: OnlineConfig = field(default_factory=OnlineConfig)  # learner, round size and schedule are set per method
    tree: TreeConfig = field(default_factory=TreeConfig)  # chain (k tokens), or a candidate tree (decoding/tree.py)

    def __post_init__(self) -> None:
        check_methods(self.methods)
        for name, value in (("max new tokens", self.max_new_tokens), ("round size", self.round_size), ("k", self.k)):
            if value < 1:
                raise UserError(f"{name} must be >= 1, got {value}")
        if self.online.schedule != "sync":
            raise UserError(
                "the benchmark runs methods interleaved in one process, where a background update would slow the "
                "other methods' decoding: use --schedule sync (its default)"
            )
        if self.online.round_tokens:
            raise UserError("the benchmark's rounds are --round-size prompts for every method; drop --round-tokens")
        if self.online.state_dir or self.online.telemetry:
            raise UserError(
                "the benchmark keeps its own checkpoint and rounds.jsonl in --out: drop --draft-state and --telemetry"
            )

    def to_dict(self) -> dict:
        """JSON-ready (tuples as lists), so a saved copy compares equal to a fresh one. The online fields that the
        benchmark sets per method (learner, round, state and telemetry) are left out."""
        out = json.loads(json.dumps(asdict(self)))
        for name in _PER_METHOD:
            out["online"].pop(name)
        if self.tree.kind == "chain":  # recorded for tree runs only: chain runs saved before trees still resume
            out.pop("tree")
        return out


def check_methods(methods: tuple[str, ...]) -> None:
    unknown = [m for m in methods if m not in METHODS and not _is_learner_variant(m)]
    if unknown:
        raise UserError(
            f"unknown method(s) {', '.join(unknown)}: choose from {', '.join(METHODS)}, or a learner with settings "
            "such as ogd-adam or ogd-adam@lr=5e-4 (LEARNER[-STEP][@FIELD=VALUE]...)"
        )
    for method in methods:
        if method != REFERENCE:
            method_config(method, OnlineConfig())  # a bad setting fails now, before any model loads
    if len(set(methods)) != len(methods):
        raise UserError(f"a method is listed twice in {','.join(methods)}")
    if REFERENCE not in methods:
        raise UserError(f"--methods must include {REFERENCE}: it is the reference for speedup and greedy equality")


def _is_learner_variant(method: str) -> bool:
    try:
        split_method(method)
    except UserError:
        return False
    return True


def stream_digest(prompts: tuple[Prompt, ...]) -> str:
    """sha256 of the decoded prompts, so a resumed run is known to decode the same ones."""
    blob = json.dumps([[p.domain, p.messages] for p in prompts])
    return hashlib.sha256(blob.encode()).hexdigest()


def prompt_ids(tokenizer, prompt: Prompt, chat: bool = True) -> torch.Tensor:
    """Prompt -> LongTensor [T]: its messages through the chat template when the tokenizer has one (and chat),
    else the message texts joined by blank lines (`onlinespec.prompting.encode_prompt`)."""
    ids = encode_prompt(tokenizer, prompt.chat(), chat)
    if ids.numel() == 0:
        raise UserError(f"a prompt of domain '{prompt.domain}' encodes to no tokens")
    return ids


def round_counts(total: RequestStats) -> dict:
    """A round's (or run's) summed counts under rounds.jsonl's names, in its order; `round_stats` inverts it."""
    return {
        "prompts": total.requests,
        "new_tokens": total.new_tokens,
        "target_forwards": total.target_forwards,
        "drafted": total.drafted,
        "accepted": total.accepted,
        "decode_s": total.wall_s,  # whole requests, prefill included
        "draft_s": total.draft_s,
        "target_s": total.target_s,
    }


def round_stats(record: dict) -> RequestStats:
    """The summed stats of one rounds.jsonl record (the counts `round_counts` wrote)."""
    return RequestStats(
        new_tokens=record["new_tokens"],
        target_forwards=record["target_forwards"],
        drafted=record["drafted"],
        accepted=record["accepted"],
        wall_s=record["decode_s"],
        draft_s=record["draft_s"],
        target_s=record["target_s"],
        requests=record["prompts"],
    )


def tokens_per_s_incl_update(total: RequestStats, update_s: float) -> float:
    """New tokens per second of decoding plus the time decoding waited for the learner."""
    return total.new_tokens / (total.wall_s + update_s) if total.wall_s + update_s else 0.0


def round_record(
    method: str,
    round_no: int,
    first: int,
    domains: list[str],
    total: RequestStats,
    update_s: float,
    learner: dict,
    sources: dict | None = None,
) -> dict:
    """One line of rounds.jsonl: a method's counts and speeds over one round (`total`: its requests summed;
    `update_s`: the time decoding waited for the learner at the round's end), the learner's telemetry, and the
    draft's per-source counts over the round (hybrid drafts only)."""
    return {
        "method": method,
        "round": round_no,
        "first_prompt": first,
        "domain": "+".join(dict.fromkeys(domains)),
        "domain_counts": [[name, len(list(group))] for name, group in groupby(domains)],  # in stream order
        **round_counts(total),
        "update_s": update_s,
        "tau": total.tau,
        "alpha": total.alpha,
        "tokens_per_s": total.tokens_per_s,
        "tokens_per_s_incl_update": tokens_per_s_incl_update(total, update_s),
        **learner,
        **({"sources": sources} if sources else {}),
    }


def _learner_telemetry(entry: dict) -> tuple[float, dict]:
    """(seconds decoding waited for the update, the session's round record minus the counts the benchmark keeps
    itself). The learner's own `update_s` (compute time) is renamed so it cannot be mistaken for the former."""
    out = {}
    for key, value in entry.items():
        if key not in _SESSION_FIELDS and (isinstance(value, int | float | str | list) or value is None):
            out["update_compute_s" if key == "update_s" else key] = value
    return float(entry.get("update_blocking_s", 0.0)), out


class BenchRunner:
    """Runs `settings` over `stream.online`, writing a checkpoint to `out` after every round.

    `on_round(records)` is called after each round's checkpoint with that round's records (one per method); an
    exception it raises stops the run exactly as an interruption would.
    """

    def __init__(
        self,
        settings: BenchSettings,
        stream: Stream,
        out: str | Path,
        resume: bool = False,
        on_round: Callable[[list[dict]], None] | None = None,
        show_progress: bool = True,
    ) -> None:
        if not stream.online:
            raise UserError(f"stream '{stream.name}' has no prompts to decode")
        self.settings, self.stream = settings, stream
        self.checkpoint = Checkpoint(out)
        self.key = {"settings": settings.to_dict(), "prompts_sha256": stream_digest(stream.online)}
        self.progress = self.checkpoint.start(self.key, resume)
        self.on_round, self.show_progress = on_round, show_progress

    @property
    def finished(self) -> bool:
        return self.progress["done"] >= len(self.stream.online)

    def run(self) -> dict:
        """Decode every prompt not yet done; returns the progress (rounds, outputs, elapsed time). A finished run
        also gets the target's logit margin at each greedy divergence (once; resuming a finished run adds them)."""
        s = self.settings
        target = None
        if not self.finished:
            self.progress["sessions"] += 1
            self.checkpoint.save(self.progress)  # a run stopped in its first round can be resumed too
            torch.manual_seed(s.seed)
            # a resumed run keeps the dtype, layout and attention its first session chose: it decodes as that did
            attention = self.progress.get("attention") or s.attention
            target = load_model(s.target, self.progress.get("dtype") or s.dtype, s.weight_layout, attention)
            self.progress["dtype"] = target.dtype
            self.progress["weight_layout"] = weight_layout(target.model)
            self.progress["attention"] = attention_kind(target.model)
            first = prompt_ids(target.tokenizer, self.stream.online[self.progress["done"]], s.chat)
            pipes = {m: self._pipeline(m, target, first) for m in s.methods}
            self._decode(pipes, target)
        if self.finished and "divergence_margins" not in self.progress:
            self._add_divergence_margins(target)
        return self.progress

    def _add_divergence_margins(self, target: LoadedModel | None) -> None:
        """How close the target's choice was wherever a greedy output left ar's (bench/divergence.py)."""
        from onlinespec.bench.divergence import divergence_margins  # imports results, which imports this module

        outputs, margins = self.progress["outputs"], {}
        if any(ours != outputs[REFERENCE] for ours in outputs.values()):
            s = self.settings
            dtype, layout = self.progress.get("dtype") or s.dtype, self.progress.get("weight_layout") or s.weight_layout
            target = target or load_model(s.target, dtype, layout, self.progress.get("attention") or s.attention)
            prompts = [prompt_ids(target.tokenizer, p, s.chat) for p in self.stream.online]
            margins = divergence_margins(target.model, prompts, outputs, REFERENCE)
        self.progress["divergence_margins"] = margins
        self.checkpoint.save(self.progress)

    def _pipeline(self, method: str, target: LoadedModel, warmup_ids: torch.Tensor) -> Pipeline:
        """The method's pipeline, after one untimed request (before learning is attached: it teaches nothing)."""
        s = self.settings
        warmup = GenerationConfig(max_new_tokens=WARMUP_TOKENS, k=s.k, tree=s.tree)
        if method == REFERENCE:
            pipe = Pipeline(target, None)
            pipe.start(warmup_ids, warmup, mode="ar").result()
            return pipe
        pipe = Pipeline(target, make_draft(s.draft, target))  # in the target's dtype
        curve = pipe.use_verify_cost(s.verify_cost)
        self.progress["verify_cost"] = None if curve is None else list(curve.relative)
        pipe.start(warmup_ids, warmup, mode="spec").result()
        # the acceptance rates that cap the verify-cost rule's estimates: a resumed run continues from the saved
        # ones (its warm-up request above must not change them), so it cuts as the uninterrupted run did
        if method in self.progress.setdefault("acceptance", {}):
            pipe.engine.acceptance.load_dict(self.progress["acceptance"][method])
        method_cfg = method_config(method, s.online)
        learns = method_cfg.learner != "static"  # static never changes its draft: nothing to save or restore
        saved_round = int(self.progress["state_rounds"].get(method, 0))
        state_dir = self.checkpoint.prepare_state(method, saved_round) if learns else None
        cfg = replace(
            method_cfg,
            round_requests=s.round_size,
            round_tokens=0,
            schedule="sync",
            state_dir=str(state_dir) if state_dir else None,
            telemetry=None,
        )
        restored = pipe.enable_learning(cfg).status().round
        if learns and restored != saved_round:
            raise UserError(
                f"the checkpoint of '{method}' holds round {restored}, not {saved_round}: "
                f"delete '{self.checkpoint.dir}' to start over"
            )
        return pipe

    def _decode(self, pipes: dict[str, Pipeline], target: LoadedModel) -> None:
        from tqdm import tqdm

        s, progress, prompts = self.settings, self.progress, self.stream.online
        cfg = GenerationConfig(max_new_tokens=s.max_new_tokens, k=s.k, tree=s.tree)
        for method in s.methods:
            progress["outputs"].setdefault(method, [])
        requests: dict[str, list[RequestStats]] = {m: [] for m in s.methods}  # this round's, per method
        learned: dict[str, dict] = {}  # the learner's round record, per method whose session ended a round
        domains: list[str] = []
        sources_before = {m: source_counts(p.draft) for m, p in pipes.items()}  # after the untimed warm-up request
        started, elapsed_before = time.perf_counter(), progress["elapsed_s"]
        bar = tqdm(
            total=len(prompts),
            initial=progress["done"],
            desc=f"bench {s.preset}: {Path(s.stream).name}",  # the stream too: flags may override the preset's
            unit="prompt",
            file=sys.stderr,
            disable=not self.show_progress,
            dynamic_ncols=True,
        )
        try:
            for index in range(progress["done"], len(prompts)):
                ids = prompt_ids(target.tokenizer, prompts[index], s.chat)
                for method, pipe in pipes.items():
                    generation = pipe.start(ids, cfg, mode="ar" if method == REFERENCE else "spec")
                    result = generation.result()
                    if (record := generation.finish()) is not None:
                        learned[method] = record
                    requests[method].append(result.stats)
                    progress["outputs"][method].append(result.token_ids)
                domains.append(prompts[index].domain)
                bar.update(1)
                if (index + 1) % s.round_size and index + 1 < len(prompts):
                    continue
                round_no = index // s.round_size + 1
                records = []
                for method, pipe in pipes.items():
                    update_s, learner = _learner_telemetry(learned[method]) if method in learned else (0.0, {})
                    total = RequestStats.total(requests[method])
                    first = index + 1 - total.requests
                    now = source_counts(pipe.draft)
                    sources = counts_between(now, sources_before[method])
                    sources_before[method] = now
                    records.append(round_record(method, round_no, first, domains, total, update_s, learner, sources))
                    status = pipe.online.status() if pipe.online is not None else None
                    if status is not None and status.learning:
                        progress["state_rounds"][method] = status.round
                progress["rounds"].extend(records)
                progress["acceptance"] = {m: p.engine.acceptance.to_dict() for m, p in pipes.items() if p.engine}
                progress["done"] = index + 1
                progress["elapsed_s"] = elapsed_before + time.perf_counter() - started  # loop only, not loading
                self.checkpoint.save(progress)
                requests = {m: [] for m in s.methods}
                learned = {}
                domains = []
                taus = " ".join(f"{r['method']} tau {r['tau']:.2f}" for r in records if r["method"] != REFERENCE)
                bar.set_postfix_str(f"round {round_no}: {taus}", refresh=False)
                if self.on_round is not None:
                    self.on_round(records)
        finally:
            bar.close()
        # Sessions are not closed: with the sync schedule nothing is pending, and close() would only re-save the
        # last snapshot, which drop_states() deletes once the results are written.
