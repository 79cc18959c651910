"""`onlinespec bench` on a tiny random model: results schema, resume after an interruption, custom JSONL prompts,
clear errors, and the plots."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import save_tiny_model_dir

from onlinespec.bench import run_bench
from onlinespec.bench.prompts import load_prompt_file, load_prompts
from onlinespec.bench.runner import BenchSettings, round_record
from onlinespec.cli import main
from onlinespec.decoding.metrics import RequestStats
from onlinespec.decoding.tree import TreeConfig
from onlinespec.drafts import DEFAULT_K
from onlinespec.errors import UserError
from onlinespec.online.learners import LearnerConfig
from onlinespec.online.session import OnlineConfig

WORDS = ["the", "cat", "sat", "on", "mat", "a", "dog", "ran", "to", "park", "big", "red", "ball", "and", "then"]
METHODS = ("ar", "static", "ogd", "optimistic", "ensemble")
TIMING = {"decode_s", "draft_s", "target_s", "update_s", "update_compute_s", "tokens_per_s", "tokens_per_s_incl_update"}


class Interrupted(Exception):
    """Raised from on_round to stop a run the way Ctrl-C would."""


def write_prompts(path, n: int = 8) -> None:
    """n prompts: plain rows, then chat rows, with a blank line in between (skipped)."""
    lines = []
    for i in range(n):
        words = " ".join(WORDS[(i * 3 + j) % len(WORDS)] for j in range(5 + i % 3))
        row = {"prompt": words} if i % 2 == 0 else {"messages": [{"role": "user", "content": words}]}
        lines.append(json.dumps(row))
    lines.insert(3, "")
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    save_tiny_model_dir(root / "model", WORDS)
    write_prompts(root / "prompts.jsonl")
    return root


def settings_for(root, **overrides) -> BenchSettings:
    values = {
        "methods": METHODS,
        "stream": "prompts.jsonl",
        "max_new_tokens": 8,
        "round_size": 2,
        "k": 2,
        "target": str(root / "model"),
        "draft": "layerskip:2",
        "online": OnlineConfig(schedule="sync", learner_cfg=LearnerConfig(lr=0.5)),
    }
    return BenchSettings(**{**values, **overrides})


@pytest.fixture(scope="module")
def full_run(setup):
    out = setup / "run-a"
    stream = load_prompts(str(setup / "prompts.jsonl"))
    return out, run_bench(settings_for(setup), stream, out, show_progress=False)


def test_results_json_has_the_documented_schema(full_run) -> None:
    out, returned = full_run
    results = json.loads((out / "results.json").read_text())
    assert results == json.loads(json.dumps(returned))
    config = results["config"]
    assert config["settings"]["seed"] == 0 and config["settings"]["methods"] == list(METHODS)
    assert config["prompts"] == 8 and config["sessions"] == 1
    assert config["draft_used"] == "layerskip:2"  # an explicit spec is recorded as given
    # the layout `auto` chose for the target's weights on this machine, and the default that asked for it
    assert config["weight_layout"] in ("standard", "transposed") and config["settings"]["weight_layout"] == "auto"
    for key in ("torch", "transformers", "python", "machine", "cpus", "onlinespec"):
        assert key in config["environment"]
    types = {
        "tau": float,
        "alpha": float,
        "tokens_per_s": float,
        "tokens_per_s_incl_update": float,
        "speedup": float,
        "update_s": float,
        "new_tokens": int,
        "rounds": int,
    }
    assert set(results["methods"]) == set(METHODS)
    for method, m in results["methods"].items():
        for key, kind in types.items():
            assert isinstance(m[key], kind), (method, key, m[key])
        assert m["rounds"] == 4
        assert m["greedy_mismatches"] == 0, m["first_divergences"]  # lossless in fp32
        assert m["speedup"] == pytest.approx(m["tokens_per_s_incl_update"] / results["methods"]["ar"]["tokens_per_s"])
        assert m["tokens_per_s_incl_update"] <= m["tokens_per_s"]
    ar, ogd = results["methods"]["ar"], results["methods"]["ogd"]
    assert ar["tau"] == 1.0 and ar["speedup"] == 1.0 and ar["update_s"] == 0.0
    assert ogd["update_s"] > 0 and ogd["new_tokens"] == ar["new_tokens"]
    rounds = [json.loads(line) for line in (out / "rounds.jsonl").read_text().splitlines()]
    assert len(rounds) == 4 * len(METHODS)
    assert all("loss" in r for r in rounds if r["method"] == "ogd")
    report = (out / "report.md").read_text()
    assert "| method | tau | alpha |" in report and "| ensemble |" in report
    assert not (out / "checkpoint" / "state").exists()  # large snapshots are dropped once the results are out


def test_plots_are_written_and_non_empty(full_run) -> None:
    out, results = full_run
    for name in ("tau_per_round.png", "speedup.png", "hedge_weights.png"):
        data = (out / name).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 10_000, name
        assert name in results["files"]


def test_a_round_that_straddles_a_domain_change_records_where_it_changes() -> None:
    record = round_record(
        "static", 2, 8, ["spider", "spider", "finance", "finance", "finance"], RequestStats.zero(), 0.0, {}
    )
    assert record["domain"] == "spider+finance"
    assert record["domain_counts"] == [["spider", 2], ["finance", 3]]  # the plot's line goes 2/5 into the round


def test_resume_after_an_interruption_reproduces_the_same_rounds(setup, full_run) -> None:
    out_a, results_a = full_run
    out_b = setup / "run-b"
    stream = load_prompts(str(setup / "prompts.jsonl"))
    seen: list[int] = []

    def stop_after_round_2(records: list[dict]) -> None:
        seen.append(records[0]["round"])
        if records[0]["round"] == 2:
            raise Interrupted

    with pytest.raises(Interrupted):
        run_bench(settings_for(setup), stream, out_b, on_round=stop_after_round_2, show_progress=False)
    assert not (out_b / "results.json").exists()
    assert json.loads((out_b / "checkpoint" / "progress.json").read_text())["done"] == 4
    with pytest.raises(UserError, match="add --resume"):
        run_bench(settings_for(setup), stream, out_b, show_progress=False)
    with pytest.raises(UserError, match="max_new_tokens: 8 then, 9 now"):
        run_bench(settings_for(setup, max_new_tokens=9), stream, out_b, resume=True, show_progress=False)

    results_b = run_bench(
        settings_for(setup), stream, out_b, resume=True, on_round=stop_after_round_2, show_progress=False
    )
    assert seen == [1, 2, 3, 4]  # rounds 1-2 were not decoded again
    assert results_b["config"]["sessions"] == 2

    def load(out):
        rows = [json.loads(line) for line in (out / "rounds.jsonl").read_text().splitlines()]
        return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]

    assert load(out_b) == load(out_a)  # tau, alpha, counts, learner losses, Hedge weights: all identical
    for method in METHODS:
        for key in ("tau", "alpha", "new_tokens", "rounds", "greedy_mismatches"):
            assert results_b["methods"][method][key] == results_a["methods"][method][key]


def test_a_tree_run_decodes_with_trees_keeps_greedy_output_and_records_the_tree(setup) -> None:
    """The hybrid with a dynamic tree (its head's tree where the lookup does not match), learners included."""
    tree = TreeConfig("dynamic", depth=3, top_k=2, total_tokens=6)
    settings = settings_for(setup, draft="hybrid:eagle:fresh", methods=("ar", "static", "count", "ogd"), tree=tree)
    stream = load_prompts(str(setup / "prompts.jsonl"), 4)
    results = run_bench(settings, stream, setup / "tree-run", show_progress=False)
    assert results["config"]["settings"]["tree"] == {**vars(tree)}
    assert "tree" not in settings_for(setup).to_dict()  # chain runs record no tree: older checkpoints resume
    for method in ("static", "count", "ogd"):
        row = results["methods"][method]
        assert row["greedy_mismatches"] == 0 and row["drafted"] > 0, (method, row)


def test_custom_jsonl_stream_reads_prompts_and_chat_messages(setup) -> None:
    prompts = load_prompt_file(setup / "prompts.jsonl")
    assert len(prompts) == 8 and prompts[0].domain == "prompts"
    assert prompts[0].messages == (("user", "the cat sat on mat"),)
    assert prompts[1].chat() == [{"role": "user", "content": prompts[1].text}]
    assert len(load_prompts(str(setup / "prompts.jsonl"), num_prompts=3).online) == 3
    with pytest.raises(UserError, match="is a folder: give a .jsonl file"):
        load_prompts(str(setup))


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (['{"prompt": "the cat"}', '{"prompt": "a dog"', '{"prompt": "x"}'], "line 2: not valid JSON"),
        (['{"prompt": "the cat"}', "", '{"text": "the cat"}'], "line 3: expected a JSON object with a non-empty"),
        (['["the cat"]'], "line 1: expected a JSON object"),
        (['{"prompt": "   "}'], "line 1: expected a JSON object with a non-empty 'prompt'"),
        (['{"messages": [{"role": "user"}]}'], "line 1: expected"),
        ([""], "has no prompts"),
    ],
)
def test_bad_jsonl_lines_are_named(tmp_path, lines: list[str], message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match=message):
        load_prompt_file(path)


def onlinespec(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "onlinespec", *args], capture_output=True, text=True, timeout=300)


def test_cli_runs_a_custom_stream_and_prints_where_it_saved(setup) -> None:
    out = setup / "cli-run"
    proc = onlinespec(
        "bench",
        "--prompts",
        str(setup / "prompts.jsonl"),
        "--num-prompts",
        "4",
        "--methods",
        "ar,static,ogd",
        "--target",
        str(setup / "model"),
        "--draft",
        "layerskip:2",
        "--max-new-tokens",
        "6",
        "--round-size",
        "2",
        "--out",
        str(out),
        "--no-progress",
    )
    assert proc.returncode == 0, proc.stderr
    assert f"saved to {out}/" in proc.stdout and "| ogd |" in proc.stdout
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["settings"]["preset"] == "quick" and results["config"]["settings"]["k"] == DEFAULT_K
    assert results["methods"]["ogd"]["rounds"] == 2
    assert not (out / "hedge_weights.png").exists()  # no ensemble in this run


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--methods", "ar,ogd,sgd"], "unknown method(s) sgd: choose from ar, static, ogd"),
        (["--methods", "static,ogd"], "--methods must include ar"),
        (["--stream", "poetry"], "unknown stream 'poetry': choose one of humaneval, spider"),
        (["--stream", "shifted:humaneval,poetry"], "unknown domain(s) poetry"),
        (["--prompts", "no/such/file.jsonl"], "prompt file 'no/such/file.jsonl' does not exist"),
        (["--resume"], "--resume needs --out DIR"),
        (["--learner", "ogd"], "list the learners to compare in --methods"),
        (["--schedule", "overlap"], "use --schedule sync"),
        (["--k", "0"], "k must be >= 1, got 0"),
        (["--preset", "quick", "--num-prompts", "2"], "2 prompts cannot cover 3 domains"),
    ],
)
def test_cli_mistakes_are_one_clear_line(tmp_path, capsys, args: list[str], message: str) -> None:
    out = [] if "--resume" in args else ["--out", str(tmp_path / "o")]
    assert main(["bench", *out, *args]) == 2
    stderr = capsys.readouterr().err
    assert message in stderr and len(stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()  # nothing written for a run that never started


def test_cli_bad_jsonl_line_exits_2_naming_the_line(tmp_path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "hi"}\n{"prompt": "hi"}\n{prompt: hi}\n')
    proc = onlinespec("bench", "--prompts", str(path), "--out", str(tmp_path / "o"))
    assert proc.returncode == 2
    assert f"{path} line 3: not valid JSON" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "o").exists()  # nothing written for a run that never started


def test_two_runs_cannot_write_one_folder(tmp_path) -> None:
    from onlinespec.bench.checkpoint import Checkpoint

    first = Checkpoint(tmp_path / "run")
    first.start({"settings": {}}, resume=False)
    with pytest.raises(UserError, match="benchmark run .* is in use by pid"):
        Checkpoint(tmp_path / "run").start({"settings": {}}, resume=False)
    first.release()
    assert Checkpoint(tmp_path / "run").start({"settings": {}}, resume=False)["done"] == 0
