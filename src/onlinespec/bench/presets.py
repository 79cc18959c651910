"""Benchmark presets: what `onlinespec bench --preset NAME` runs unless a flag says otherwise."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from onlinespec.drafts import DEFAULT_K
from onlinespec.errors import UserError


@dataclass(frozen=True)
class Preset:
    stream: str  # a stream name (see bench.prompts.STREAM_NAMES) or shifted:a,b,...
    num_prompts: int  # online prompts decoded (a shifted stream takes num_prompts // domains of each)
    max_new_tokens: int
    round_size: int  # requests per learning round
    methods: tuple[str, ...]
    k: int  # drafted tokens per verify step: DEFAULT_K, the fastest with the bundled EAGLE head (README)
    expected: str  # run time on the project's 2-core CPU, for the help text and README

    def to_dict(self) -> dict:
        return asdict(self)


PRESETS = {
    # 24 prompts x 32 tokens x 3 methods: ~770 new tokens per method. Measured 2 min 34 s with a fresh model cache
    # (conversion included; README).
    "quick": Preset(
        stream="shifted:humaneval,spider,finance",
        num_prompts=24,
        max_new_tokens=32,
        round_size=4,
        methods=("ar", "static", "ogd"),
        k=DEFAULT_K,
        expected="about 3 minutes",
    ),
    # 120 prompts (20 from each of six domains) x 96 tokens x 5 methods. Measured 34 min 25 s (README).
    "full": Preset(
        stream="shifted",
        num_prompts=120,
        max_new_tokens=96,
        round_size=8,
        methods=("ar", "static", "ogd", "optimistic", "ensemble"),
        k=DEFAULT_K,
        expected="about 35 minutes",
    ),
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise UserError(f"unknown preset '{name}': choose one of {', '.join(PRESETS)}")
    return PRESETS[name]
