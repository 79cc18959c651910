"""Per-method results from the round records, the report table, and the output files (docs/method.md §1 metrics).

results.json keeps, for every method: tau, alpha, tokens_per_s (decoding only), tokens_per_s_incl_update (update
time that decoding waited for added), speedup (incl. update, vs `ar` of the same run), update_s, new_tokens,
rounds; plus the Leviathan ideal and the greedy-equality check against `ar`.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path

from onlinespec.atomic import write_text_atomic
from onlinespec.bench.runner import REFERENCE, round_counts, round_stats, tokens_per_s_incl_update
from onlinespec.decoding.metrics import RequestStats

MAX_DIVERGENCES = 5  # first divergent prompts listed per method


def environment() -> dict:
    """Versions and machine, recorded with every run."""
    import numpy
    import torch
    import transformers

    from onlinespec import __version__

    return {
        "onlinespec": __version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "numpy": numpy.__version__,
        "machine": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
    }


def ideal_speedup(alpha: float, k: int, c: float, u: float = 0.0) -> float:
    """Leviathan et al. 2023: E = (1 - a^(k+1)) / (1 - a) tokens per step, S = E / (1 + c k + u) (docs/method.md §1)."""
    expected = float(k + 1) if alpha >= 1.0 else (1 - alpha ** (k + 1)) / (1 - alpha)
    return expected / (1 + c * k + u)


def first_divergence(ours: list[int], ref: list[int]) -> int | None:
    """Index of the first token where two outputs differ (or where the shorter ends); None if equal."""
    for i, (a, b) in enumerate(zip(ours, ref, strict=False)):
        if a != b:
            return i
    return None if len(ours) == len(ref) else min(len(ours), len(ref))


def _ratio(a: float, b: float) -> float:
    return a / b if b else 0.0


def sum_sources(rounds: list[dict]) -> dict[str, dict[str, float]]:
    """A method's per-source counts (rounds.jsonl "sources") summed over its rounds, with each source's
    first-token rate and mean score (drafts/source_gate.py); {} for drafts that have no sources."""
    total: dict[str, dict[str, float]] = {}
    for record in rounds:
        for source, counts in record.get("sources", {}).items():
            for key, value in counts.items():
                total.setdefault(source, {}).setdefault(key, 0)
                total[source][key] += value
    for counts in total.values():
        if counts.get("scored"):
            counts["first_token_rate"] = counts["first_right"] / counts["scored"]
            counts["mean_score"] = counts["matched"] / counts["scored"]
    return total


def by_domain(rounds: list[dict]) -> dict[str, dict[str, float]]:
    """A method's rounds grouped by their domain label (rounds.jsonl "domain": one domain, or "a+b" for a round
    whose prompts span two), in stream order: per label its new tokens, tau and tokens/s with the update time
    the sync schedule put on the clock (tokens / (decode + update seconds))."""
    groups: dict[str, list[dict]] = {}
    for record in rounds:
        groups.setdefault(record.get("domain", "all"), []).append(record)
    out = {}
    for label, own in groups.items():
        tokens = sum(r["new_tokens"] for r in own)
        seconds = sum(r["decode_s"] + r["update_s"] for r in own)
        forwards = sum(r["target_forwards"] for r in own)
        out[label] = {
            "new_tokens": tokens,
            "tau": _ratio(tokens, forwards),
            "tokens_per_s_incl_update": _ratio(tokens, seconds),
        }
    return out


def summarise(
    config: dict, rounds: list[dict], outputs: dict[str, list[list[int]]], k: int, margins: dict | None = None
) -> dict:
    """results.json's content: `config` as given, and per method the sums over its rounds and derived figures.
    `margins` ({method: {prompt index: margin}}, bench/divergence.py) adds the target's logit margin to each
    first divergence it covers."""
    methods: dict[str, dict] = {}
    for method in outputs:
        own = [r for r in rounds if r["method"] == method]
        total = RequestStats.total(round_stats(r) for r in own)
        t = round_counts(total)
        update_s = sum(r["update_s"] for r in own)
        third = own[-max(1, len(own) // 3) :]
        divergences = []
        for index, (ours, ref) in enumerate(zip(outputs[method], outputs[REFERENCE], strict=True)):
            at = first_divergence(ours, ref)
            if at is not None:
                margin = (margins or {}).get(method, {}).get(str(index))
                divergences.append({"prompt": index, "token": at, **({} if margin is None else {"margin": margin})})
        methods[method] = {
            "tau": total.tau,
            "alpha": total.alpha,
            "tokens_per_s": total.tokens_per_s,
            "tokens_per_s_incl_update": tokens_per_s_incl_update(total, update_s),
            "update_s": update_s,
            "new_tokens": t["new_tokens"],
            "rounds": len(own),
            "prompts": t["prompts"],
            "decode_s": t["decode_s"],
            "target_forwards": t["target_forwards"],
            "drafted": t["drafted"],
            "accepted": t["accepted"],
            "draft_s": t["draft_s"],
            "target_s": t["target_s"],
            "tau_per_round": [r["tau"] for r in own],
            "tau_last_third": RequestStats.total(round_stats(r) for r in third).tau,
            "greedy_mismatches": len(divergences),
            "first_divergences": divergences[:MAX_DIVERGENCES],
            "domains": by_domain(own),
            **({"sources": sources} if (sources := sum_sources(own)) else {}),
        }
    ref = methods[REFERENCE]
    ar_step_s = _ratio(ref["decode_s"], ref["target_forwards"])  # one autoregressive target step, prefill included
    static_last = methods.get("static", {}).get("tau_last_third")
    for method, m in methods.items():
        m["speedup"] = _ratio(m["tokens_per_s_incl_update"], ref["tokens_per_s_incl_update"])
        m["speedup_excl_update"] = _ratio(m["tokens_per_s"], ref["tokens_per_s"])
        m["tau_last_third_vs_static"] = _ratio(m["tau_last_third"], static_last) if static_last else None
        if method == REFERENCE or not m["drafted"]:
            m.update(cost_ratio=0.0, update_per_step=0.0, ideal_speedup=1.0)
        else:
            # c = draft seconds per drafted token / AR target step; u = update seconds per target step / AR step
            m["cost_ratio"] = _ratio(_ratio(m["draft_s"], m["drafted"]), ar_step_s)
            m["update_per_step"] = _ratio(_ratio(m["update_s"], m["target_forwards"]), ar_step_s)
            m["ideal_speedup"] = ideal_speedup(m["alpha"], k, m["cost_ratio"], m["update_per_step"])
        m["efficiency"] = _ratio(m["speedup"], m["ideal_speedup"])
        for label, d in m["domains"].items():  # against ar's rounds of the same domain label
            d["speedup"] = _ratio(
                d["tokens_per_s_incl_update"], ref["domains"].get(label, {}).get("tokens_per_s_incl_update", 0.0)
            )
    return {
        "config": config,
        "methods": methods,
        "greedy_mismatches": sum(m["greedy_mismatches"] for m in methods.values()),
    }


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def render_report(results: dict) -> str:
    """Markdown a user can paste into an issue: settings, the table, and tau per round."""
    c, s = results["config"], results["config"]["settings"]
    env = c["environment"]
    used = c.get("draft_used", s["draft"])
    draft = s["draft"] if used == s["draft"] else f"{s['draft']} (= {used})"
    dtype_used = c.get("dtype_used") or s["dtype"]
    dtype = s["dtype"] if dtype_used == s["dtype"] else f"{s['dtype']} (= {dtype_used})"
    lines = [
        f"# onlinespec bench: {c['stream']} ({c['prompts']} prompts, preset {s['preset']})",
        "",
        f"target {s['target']} {dtype}, draft {draft}, k = {s['k']}, greedy, {s['max_new_tokens']} new "
        f"tokens, rounds of {s['round_size']} prompts, lr {s['online']['learner_cfg']['lr'] or 'per learner'}, "
        f"schedule {s['online']['schedule']}, seed {s['seed']}; onlinespec {env['onlinespec']}, torch {env['torch']}, "
        f"transformers {env['transformers']}, {env['cpus']} CPUs ({env['torch_threads']} torch threads); "
        f"wall {c['wall_s'] / 60:.1f} min",
        "",
        "| method | tau | alpha | tau last third vs static | tok/s excl. update | tok/s incl. update | update s "
        "| speedup vs ar | ideal speedup | efficiency | greedy mismatches |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for method, m in results["methods"].items():
        drafting = method != REFERENCE
        lines.append(
            f"| {method} | {m['tau']:.3f} | {_fmt(m['alpha'] if drafting else None)} | "
            f"{_fmt(m['tau_last_third_vs_static'] if drafting else None)} | {m['tokens_per_s']:.2f} | "
            f"{m['tokens_per_s_incl_update']:.2f} | {m['update_s']:.1f} | {m['speedup']:.3f} | "
            f"{m['ideal_speedup']:.3f} | {m['efficiency']:.3f} | {m['greedy_mismatches']} |"
        )
    lines += [
        "",
        "tok/s: new tokens / wall time of whole requests (prefill included); incl. update adds the time decoding "
        "waited for the learner. speedup = tok/s incl. update / ar's. ideal = Leviathan's E / (1 + c k + u) with this "
        "run's alpha, draft cost c and update cost u per AR step; efficiency = speedup / ideal. Greedy mismatches: "
        "prompts whose output differs from ar's (must be 0 in float32).",
        "",
        "tau per round:",
        "",
    ]
    for method, m in results["methods"].items():
        if method != REFERENCE:
            lines.append(f"- {method}: {' '.join(f'{t:.2f}' for t in m['tau_per_round'])}")
    labels = list(results["methods"][REFERENCE].get("domains", {}))
    if len(labels) > 1:  # a shifted stream: where the speed came from
        lines += [
            "",
            "per domain (rounds grouped by the domains of their prompts): tau / speedup against ar's rounds of the "
            "same domain",
            "",
            "| method | " + " | ".join(labels) + " |",
            "|---|" + "---:|" * len(labels),
        ]
        for method, m in results["methods"].items():
            if method != REFERENCE:
                cells = [m["domains"].get(label) for label in labels]
                lines.append(
                    f"| {method} | "
                    + " | ".join("-" if d is None else f"{d['tau']:.2f} / {d['speedup']:.2f}x" for d in cells)
                    + " |"
                )
    sourced = {method: m["sources"] for method, m in results["methods"].items() if m.get("sources")}
    if sourced:
        lines += [
            "",
            "which source drafted (hybrid draft): verify steps drafted, and the share of scored proposals whose first "
            "token the target committed (held back: earlier traffic's proposals the gate kept out):",
            "",
        ]
        for method, sources in sourced.items():
            parts = [
                f"{name} {c.get('steps', 0)} steps ({_fmt(c.get('first_token_rate'), '.2f')})"
                + (f", {c['held_back']} held back" if c.get("held_back") else "")
                for name, c in sources.items()
            ]
            lines.append(f"- {method}: " + "; ".join(parts))
    return "\n".join(lines) + "\n"


def write_outputs(out: str | Path, results: dict, rounds: list[dict]) -> list[str]:
    """results.json, rounds.jsonl, report.md and the plots, each written atomically; returns the file names."""
    from onlinespec.bench.plots import write_plots

    out = Path(out)
    write_text_atomic(out / "rounds.jsonl", "".join(json.dumps(r) + "\n" for r in rounds))
    write_text_atomic(out / "report.md", render_report(results))
    files = ["results.json", "rounds.jsonl", "report.md", *write_plots(out, results, rounds)]
    results["files"] = files
    write_text_atomic(out / "results.json", json.dumps(results, indent=2))  # last: its presence means "complete"
    return files
