"""Benchmark presets: what `onlinespec bench --preset NAME` runs unless a flag says otherwise."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from onlinespec.drafts.registry import parse_draft_spec
from onlinespec.errors import UserError
from onlinespec.online.counting_draft import COUNT


@dataclass(frozen=True)
class Preset:
    stream: str  # a stream name (see bench.prompts.STREAM_NAMES) or shifted:a,b,...
    num_prompts: int  # online prompts decoded (a shifted stream takes num_prompts // domains of each)
    max_new_tokens: int
    round_size: int  # requests per learning round
    methods: tuple[str, ...]
    k: int | None  # drafted tokens per verify step; None = the draft's default (drafts/registry.py default_k)
    expected: str  # run time on the project's 2-core CPU, for the help text and README

    def to_dict(self) -> dict:
        return asdict(self)


PRESETS = {
    # 24 prompts x 32 tokens x 4 methods: ~770 new tokens per method. `count` (the default draft's index learning,
    # no gradient) runs only with a draft that counts (methods_for_draft). Measured: see docs/benchmarks.md.
    "quick": Preset(
        stream="shifted:humaneval,spider,finance",
        num_prompts=24,
        max_new_tokens=32,
        round_size=4,
        methods=("ar", "static", COUNT, "ogd"),
        k=None,
        expected="about 1 minute",
    ),
    # 120 prompts (20 from each of six domains) x 96 tokens x 6 methods. Measured 11 min 1 s in bf16 with the
    # default draft (docs/benchmarks.md; 34 min 25 s when it was 5 methods in fp32 with the EAGLE head).
    "full": Preset(
        stream="shifted",
        num_prompts=120,
        max_new_tokens=96,
        round_size=8,
        methods=("ar", "static", COUNT, "ogd", "optimistic", "ensemble"),
        k=None,
        expected="about 11 minutes",
    ),
}


# The adaptation presets (issue 11.6): domains the bundled head was NOT warmed up on (it saw HumanEval, Spider,
# finance and the CPython stdlib), each lasting >= 10 rounds. The adaptive methods run Adam steps (lr 5e-4, the
# default for step adam: the order of the paper's online AdamW) on mini-batches of 2 requests, 2 epochs per round,
# replaying up to 160 earlier positions, and also learn from the last 256 prompt positions of each request
# (online/prompt_feedback.py); `ogd` is the textbook SGD rule (lr 0.1). Prompt positions were measured better than
# none on summaries (docs/benchmarks.md: last third 1.14x static against 1.10x, update time 161 s against 256 s).
ADAPTIVE = "@batch_requests=2@epochs=2@replay_positions=160@prompt_positions=256"
LONG_STREAM_ADAM = "@epochs=1@prompt_positions=0@lr=1e-4@unroll=1@loss_after=false"
ADAPT_METHODS = (
    "ar",
    "static",
    COUNT,
    "ogd",
    f"ogd-adam{ADAPTIVE}",
    f"optimistic-adam{ADAPTIVE}",
    f"ensemble-adam{ADAPTIVE}@lr_grid=centred@hedge_rate=anytime@share=0.05",
)
PRESETS.update(
    {
        # 64 writingbench prompts (16 rounds of 4) x 40 tokens (answers run to the limit). Measured: the 7 methods
        # took 8.9 min in bf16 on the 2-core avx512_bf16 EPYC (docs/benchmarks.md; 4 of them 40.6 min in fp32 on a
        # shared machine earlier); `--stream summaries` runs the same protocol on a domain whose answers are short
        # (~25 tokens) and copy the prompt.
        "adapt": Preset(
            stream="writingbench",
            num_prompts=64,
            max_new_tokens=40,
            round_size=4,
            methods=ADAPT_METHODS,
            k=None,
            expected="about 9 minutes",
        ),
        # The summaries online slice nearly whole: 240 prompts, 60 rounds of 4, 40 tokens; the frozen draft, its
        # index learning (`count`) and one cheap Adam step a round on the head (lr 1e-4: on this stream 5e-4 drifted,
        # its head scoring 0.254 first tokens right over the last third against the frozen head's 0.259, 1e-4 0.302;
        # the first drafted token only, no loss-after pass: 9.4 s of updates against 20-27 s). Measured in
        # docs/benchmarks.md ("A long stream of one unseen domain").
        "adapt-long": Preset(
            stream="summaries",
            num_prompts=240,
            max_new_tokens=40,
            round_size=4,
            methods=("ar", "static", COUNT, f"ogd-adam{LONG_STREAM_ADAM}"),
            k=None,
            expected="about 9 minutes (8 min 46 s measured, bf16 on a 2-core avx512_bf16 EPYC)",
        ),
        # writingbench, summaries, math: 40 prompts (10 rounds of 4) each, 40 tokens, the same 7 methods (measured
        # 10.5 min in bf16 on the 2-core avx512_bf16 EPYC, docs/benchmarks.md).
        "adapt-shift": Preset(
            stream="shifted:writingbench,summaries,math",
            num_prompts=120,
            max_new_tokens=40,
            round_size=4,
            methods=ADAPT_METHODS,
            k=None,
            expected="about 11 minutes (10.5 min measured, bf16)",
        ),
    }
)


def methods_for_draft(methods: tuple[str, ...], draft: str) -> tuple[str, ...]:
    """A preset's methods for `draft` (a draft spec), by how its kind learns (drafts/registry.py `learns`): no
    `count` for a draft that does not count; for one that only counts (lookup) every learner counts
    (online/counting_session.py), so with `count` listed the gradient learners would repeat its run: dropped."""
    learns = parse_draft_spec(draft).kind.learns
    if "counting" not in learns:
        return tuple(m for m in methods if m != COUNT)
    if "gradient" not in learns and COUNT in methods:
        return tuple(m for m in methods if m in ("ar", "static", COUNT))
    return methods


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise UserError(f"unknown preset '{name}': choose one of {', '.join(PRESETS)}")
    return PRESETS[name]
