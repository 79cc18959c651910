"""PNG plots of a benchmark run: the learning curve (tau per round), speedup per method, and the ensemble's Hedge
weights over rounds. matplotlib is imported here only, with the Agg backend and no pyplot (no global state)."""

from __future__ import annotations

from pathlib import Path

from onlinespec.atomic import atomic_path
from onlinespec.bench.runner import REFERENCE

DPI = 120


def _figure(width: float = 8.0, height: float = 4.5):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> str:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path.name


def _mark_domains(ax, rounds: list[dict]) -> None:
    """A dotted vertical line where the stream's domain changes (inside a round when the change falls there: round r
    spans r - 0.5 .. r + 0.5), labelled with the new domain; nothing when the stream has one domain."""
    runs = [(r, r.get("domain_counts") or [[r["domain"], r["prompts"]]]) for r in rounds]
    if len({name for _, counts in runs for name, _ in counts}) < 2:
        return
    low, high = ax.get_ylim()
    ax.set_ylim(low, high + 0.2 * (high - low))  # headroom for the labels above the curves
    previous = None
    for r, counts in runs:
        offset = 0
        for name, count in counts:
            if name != previous:
                x = r["round"] - 0.5 + offset / max(r["prompts"], 1)
                if previous is not None:
                    ax.axvline(x, color="grey", linestyle=":", linewidth=1)
                ax.annotate(
                    name,
                    (x, 0.98),
                    xytext=(2, 0),
                    textcoords="offset points",
                    xycoords=("data", "axes fraction"),
                    rotation=90,
                    ha="left",
                    va="top",
                    fontsize=8,
                    color="dimgrey",
                )
                previous = name
            offset += count


def plot_tau(results: dict, rounds: list[dict], path: Path) -> str:
    fig = _figure()
    ax = fig.add_subplot()
    for method in results["methods"]:
        own = [r for r in rounds if r["method"] == method]
        style = {"linestyle": "--", "color": "black", "marker": None} if method == REFERENCE else {"marker": "o"}
        ax.plot([r["round"] for r in own], [r["tau"] for r in own], label=method, **style)
    reference = [r for r in rounds if r["method"] == REFERENCE]
    ax.margins(y=0.15)
    _mark_domains(ax, reference)
    ax.set_xlim(0.5, len(reference) + 0.5)
    ax.set_title("Learning curve: tau (tokens per target forward) per round")
    ax.set_xlabel(f"round ({results['config']['settings']['round_size']} prompts each)")
    ax.set_ylabel("tau (AR = 1)")
    ax.grid(alpha=0.3)
    ax.legend(title="method", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(fig, path)


def plot_speedup(results: dict, path: Path) -> str:
    methods = list(results["methods"])
    values = results["methods"]
    fig = _figure(max(5.0, 1.4 * len(methods) + 2), 4.5)
    ax = fig.add_subplot()
    x = range(len(methods))
    width = 0.38
    excl = [values[m]["speedup_excl_update"] for m in methods]
    incl = [values[m]["speedup"] for m in methods]
    ax.bar([i - width / 2 for i in x], excl, width, label="excluding update time", color="lightsteelblue")
    bars = ax.bar([i + width / 2 for i in x], incl, width, label="including update time", color="steelblue")
    ax.bar_label(bars, fmt="%.2f", fontsize=8)
    ax.axhline(1.0, color="black", linestyle="--", linewidth=1, label="ar (1.0)")
    ax.set_xticks(list(x), methods)
    ax.set_title("Speedup over autoregressive decoding (tokens/s ratio, same run)")
    ax.set_xlabel("method")
    ax.set_ylabel("speedup vs ar")
    ax.margins(y=0.15)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=3, frameon=False)
    return _save(fig, path)


def plot_hedge_weights(rounds: list[dict], path: Path) -> str | None:
    """Weights p_{t+1} after each round of the `ensemble` method; None when it did not run or never updated."""
    own = [r for r in rounds if r["method"] == "ensemble" and r.get("weights")]
    if not own:
        return None
    fig = _figure()
    ax = fig.add_subplot()
    lrs = own[0].get("expert_lrs") or [None] * len(own[0]["weights"])
    for i, lr in enumerate(lrs):
        label = f"expert {i} (lr {lr:g})" if lr is not None else f"expert {i}"
        ax.plot([r["round"] for r in own], [r["weights"][i] for r in own], marker="o", label=label)
    ax.set_title("Ensemble: Hedge weights of its OGD experts after each round's update")
    ax.set_xlabel("round")
    ax.set_ylabel("weight")
    ax.set_ylim(-0.05, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(fig, path)


def write_plots(out: Path, results: dict, rounds: list[dict]) -> list[str]:
    """Write the PNGs into `out`; returns their file names."""
    files = [plot_tau(results, rounds, out / "tau_per_round.png"), plot_speedup(results, out / "speedup.png")]
    hedge = plot_hedge_weights(rounds, out / "hedge_weights.png")
    return files + ([hedge] if hedge else [])
