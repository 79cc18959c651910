"""`onlinespec bench`'s report and output files, in process: report.md's lines from a summary, the files written
and what they hold, and the environment recorded with every run."""

from __future__ import annotations

import json
import platform

import torch
from test_bench_arithmetic import ROUNDS, K, outputs

from onlinespec.bench.results import environment, render_report, summarise, write_outputs


def config(draft: str = "auto", used: str = "hybrid") -> dict:
    settings = {
        "draft": draft,
        "preset": "quick",
        "target": "smollm2-135m",
        "dtype": "float32",
        "k": K,
        "max_new_tokens": 32,
        "round_size": 4,
        "seed": 0,
        "online": {"learner_cfg": {"lr": None}, "schedule": "sync"},
    }
    env = {"onlinespec": "0.1.0", "torch": "2.13.0", "transformers": "5.17.0", "cpus": 2, "torch_threads": 2}
    return {
        "stream": "shifted",
        "prompts": 4,
        "settings": settings,
        "environment": env,
        "wall_s": 90.0,
        "draft_used": used,
    }


def test_the_report_has_a_row_per_method_and_tau_per_round() -> None:
    results = summarise(config(), ROUNDS, outputs(static_second=[5, 6, 9, 8]), K)
    lines = render_report(results).splitlines()
    assert lines[0] == "# onlinespec bench: shifted (4 prompts, preset quick)"
    assert "draft auto (= hybrid), k = 3," in lines[2] and "lr per learner" in lines[2] and "wall 1.5 min" in lines[2]
    rows = {
        line.split(" | ")[0][2:]: line.split(" | ") for line in lines if line.startswith("| ") and "---" not in line
    }
    assert list(rows) == ["method", "ar", "static", "ogd"]
    s, o = results["methods"]["static"], results["methods"]["ogd"]
    assert rows["ar"][1:4] == ["1.000", "-", "-"]  # ar: no alpha, no last-third ratio
    assert rows["static"][1:4] == [f"{s['tau']:.3f}", f"{s['alpha']:.3f}", "1.000"]
    assert rows["ogd"][3] == f"{o['tau_last_third_vs_static']:.3f}" and rows["ogd"][6] == "0.6"
    assert rows["static"][-1] == "1 |" and rows["ogd"][-1] == "0 |"  # greedy mismatches
    per_round = [line for line in lines if line.startswith("- ")]
    assert per_round == ["- static: 2.00 2.00 2.50", "- ogd: 2.00 2.00 2.00 2.00 3.00 3.00"]


def test_the_report_names_the_draft_once_when_it_is_the_one_used() -> None:
    results = summarise(config(draft="eagle", used="eagle"), ROUNDS, outputs(), K)
    assert "draft eagle, k = 3," in render_report(results)


def numbered(rounds: list[dict]) -> list[dict]:
    """The records with their round number within their method (1, 2, ...) and a domain, as the runner writes
    them."""
    count: dict[str, int] = {}
    out = []
    for r in rounds:
        count[r["method"]] = count.get(r["method"], 0) + 1
        out.append({**r, "round": count[r["method"]], "domain": "humaneval"})
    return out


def test_write_outputs_writes_every_file_and_lists_them(tmp_path) -> None:
    rounds = numbered(ROUNDS)
    results = summarise(config(), rounds, outputs(), K)
    files = write_outputs(tmp_path, results, rounds)
    assert files[:3] == ["results.json", "rounds.jsonl", "report.md"] and "tau_per_round.png" in files
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(files)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["files"] == files and saved["methods"] == json.loads(json.dumps(results["methods"]))
    assert [json.loads(line) for line in (tmp_path / "rounds.jsonl").read_text().splitlines()] == rounds
    assert (tmp_path / "report.md").read_text() == render_report(results)


def test_the_environment_records_this_machine() -> None:
    env = environment()
    assert env["python"] == platform.python_version()
    assert env["processor"] == (platform.processor() or platform.machine()) and env["processor"]
    assert env["torch"] == torch.__version__ and env["torch_threads"] == torch.get_num_threads()
