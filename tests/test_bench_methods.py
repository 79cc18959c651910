"""Bench methods that carry learner settings (bench/methods.py) and the adaptation presets (issue 11.6)."""

from __future__ import annotations

import json

import pytest
from conftest import save_tiny_model_dir
from test_bench import settings_for, write_prompts

from onlinespec.bench import run_bench
from onlinespec.bench.methods import method_config, split_method
from onlinespec.bench.presets import PRESETS
from onlinespec.bench.prompts import load_prompts, parse_stream_name
from onlinespec.errors import UserError
from onlinespec.online.learners import LearnerConfig
from onlinespec.online.session import OnlineConfig

WORDS = ["the", "cat", "sat", "on", "mat", "a", "dog", "ran", "to", "park", "big", "red", "ball", "and", "then"]


def test_a_method_name_carries_a_step_and_settings() -> None:
    base = OnlineConfig(schedule="sync", learner_cfg=LearnerConfig(lr=0.1))
    assert split_method("ogd") == ("ogd", None, [])
    assert split_method("sgd-momentum") == ("sgd-momentum", None, [])
    cfg = method_config("ogd-adam", base)
    assert cfg.learner == "ogd" and cfg.learner_cfg.step == "adam" and cfg.learner_cfg.lr == 0.1
    cfg = method_config("ensemble-adagrad@lr=5e-4@lr_grid=centred@share=0.05@epochs=2@mask_oov=false", base)
    assert (cfg.learner, cfg.learner_cfg.step, cfg.learner_cfg.lr) == ("ensemble", "adagrad", 5e-4)
    assert (cfg.learner_cfg.lr_grid, cfg.learner_cfg.share, cfg.epochs, cfg.mask_oov) == ("centred", 0.05, 2, False)
    assert method_config("ogd@adam_betas=0.8/0.9", base).learner_cfg.adam_betas == (0.8, 0.9)
    assert base.learner_cfg.step == "sgd" and base.epochs == 1  # the run's config is not changed
    for bad, message in [
        ("ogd-rmsprop", "unknown method"),
        ("ogd@lr", "is not FIELD=VALUE"),
        ("ogd@schedule=overlap", "unknown setting 'schedule'"),
        ("ogd@lr=fast", "cannot read 'fast'"),
        ("ogd@lr=-1", "lr must be > 0"),
    ]:
        with pytest.raises(UserError, match=message):
            method_config(bad, base)


def test_adapt_presets_stream_unseen_domains_for_long_enough() -> None:
    warmed = {"humaneval", "spider", "finance"}  # the bundled head's warm-up (plus the CPython stdlib)
    for name, min_rounds in (("adapt", 15), ("adapt-shift", 10)):
        preset = PRESETS[name]
        base_name, domains = parse_stream_name(preset.stream)
        domains = domains or (base_name,)
        assert not set(domains) & warmed
        assert preset.num_prompts // len(domains) // preset.round_size >= min_rounds
        base = OnlineConfig(schedule="sync", learner_cfg=LearnerConfig(lr=0.1))
        learners = {method_config(m, base).learner_cfg.step for m in preset.methods if m != "ar"}
        assert {"sgd", "adam"} <= learners and "static" in preset.methods
    long = PRESETS["adapt-long"]
    assert long.stream not in warmed and long.num_prompts // long.round_size >= 50
    assert {"ar", "static", "count"} <= set(long.methods)
    adam = [method_config(m, OnlineConfig(schedule="sync")) for m in long.methods if m.startswith("ogd-adam")]
    assert [(c.learner_cfg.step, c.learner_cfg.lr, c.unroll, c.loss_after) for c in adam] == [("adam", 1e-4, 1, False)]


def test_bench_runs_variants_and_records_the_new_telemetry(tmp_path) -> None:
    save_tiny_model_dir(tmp_path / "model", WORDS)
    write_prompts(tmp_path / "prompts.jsonl", n=4)
    variant = "ogd-adam@lr=1e-3@batch_requests=1@epochs=2@replay_positions=64"
    settings = settings_for(tmp_path, methods=("ar", "static", variant))
    run_bench(settings, load_prompts(str(tmp_path / "prompts.jsonl")), tmp_path / "out", show_progress=False)
    rounds = [json.loads(line) for line in (tmp_path / "out" / "rounds.jsonl").read_text().splitlines()]
    learned = [r for r in rounds if r["method"] == variant]
    assert len(learned) == 2 and all(r["steps"] >= 4 and "loss_after" in r and r["oov_rate"] == 0 for r in learned)
    assert learned[1]["steps"] > learned[0]["steps"]  # round 2 replays round 1


def test_presets_run_count_only_with_a_draft_that_counts() -> None:
    """`count` (index learning, no gradient) is in the quick preset for the default draft and left out for a
    gradient-only draft, which would refuse it; a counting-only draft (lookup) runs `count` once, not again as
    `ogd` (which counts too for it); methods given with --methods are never changed."""
    from onlinespec.bench.presets import methods_for_draft

    quick = PRESETS["quick"].methods
    assert "count" in quick and "ogd" in quick
    for draft in ("auto", "hybrid", "hybrid:eagle3"):
        assert methods_for_draft(quick, draft) == quick
    for draft in ("lookup", "lookup:3:1000"):
        assert methods_for_draft(quick, draft) == ("ar", "static", "count")
    for name in ("full", "adapt", "adapt-shift", "adapt-long"):  # every preset now lists count beside the learners
        methods = PRESETS[name].methods
        assert "count" in methods
        assert methods_for_draft(methods, "lookup") == ("ar", "static", "count")
        assert methods_for_draft(methods, "eagle") == tuple(m for m in methods if m != "count")
    for draft in ("eagle", "eagle3:fresh", "medusa", "layerskip:4", "none", "some/model"):
        assert methods_for_draft(quick, draft) == tuple(m for m in quick if m != "count")


def test_a_hybrid_bench_records_which_source_drafted_each_step(tmp_path) -> None:
    """Per round, the hybrid's verify steps by source (rounds.jsonl "sources") add up to its verify steps (target
    forwards less one prefill per prompt, less the plain last step a prompt takes when one token of its budget is
    left); results.json sums them and report.md names them."""
    save_tiny_model_dir(tmp_path / "model", WORDS)
    write_prompts(tmp_path / "prompts.jsonl", n=4)
    settings = settings_for(tmp_path, methods=("ar", "static", "count"), draft="hybrid:eagle:fresh")
    results = run_bench(settings, load_prompts(str(tmp_path / "prompts.jsonl")), tmp_path / "out", show_progress=False)
    rounds = [json.loads(line) for line in (tmp_path / "out" / "rounds.jsonl").read_text().splitlines()]
    drafting = [r for r in rounds if r["method"] != "ar"]
    assert len(drafting) == 4 and not any("sources" in r for r in rounds if r["method"] == "ar")
    for r in drafting:
        steps = sum(counts["steps"] for counts in r["sources"].values())
        assert r["target_forwards"] - 2 * r["prompts"] <= steps <= r["target_forwards"] - r["prompts"], r
    for method in ("static", "count"):
        summed = results["methods"][method]["sources"]
        own = [r for r in drafting if r["method"] == method]
        assert summed["head"]["steps"] == sum(r["sources"]["head"]["steps"] for r in own) > 0
        assert 0 <= summed["head"]["first_token_rate"] <= 1
    assert "- count: request " in (tmp_path / "out" / "report.md").read_text()
