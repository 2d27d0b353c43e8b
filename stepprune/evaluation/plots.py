"""PNG plots of an eval: accuracy against kappa with CI bands (the paper's Figure 1), and kept
thinking tokens against kappa, one panel per source, one line per strategy."""

from __future__ import annotations

from pathlib import Path

STYLE = {"low": "C0", "high": "C3", "random": "C7", "token": "C2"}
STYLE.update({"random-matched": "C8", "high-matched": "C1", "answer-first": "C4"})
LINES = {"token": "--", "random-matched": ":", "high-matched": ":"}
LABEL_OFFSETS = ((4, 4), (4, -11), (-6, 12), (-6, -19))


def _panels(curve, sharey: bool):
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on clusters or CI
    import matplotlib.pyplot as plt

    sources = sorted(curve["source"].unique().to_list(), key=lambda s: (s != "all", s))
    fig, axes = plt.subplots(
        1, len(sources), figsize=(4.2 * len(sources), 3.6), squeeze=False, sharey=sharey
    )
    return plt, fig, list(zip(sources, axes[0], strict=True))


def plot_accuracy(curve, path: Path, level: float = 0.95) -> None:
    import polars as pl

    plt, fig, panels = _panels(curve, sharey=True)
    for source, ax in panels:
        part = curve.filter(pl.col("source") == source)
        for strategy, g in part.group_by("strategy", maintain_order=True):
            g = g.sort("kappa")
            color = STYLE.get(strategy[0])
            ax.plot(
                g["kappa"],
                g["accuracy"],
                marker="o",
                color=color,
                label=strategy[0],
                linestyle=LINES.get(strategy[0], "-"),  # token lies on low at small kappa
            )
            ax.fill_between(g["kappa"], g["ci_low"], g["ci_high"], color=color, alpha=0.15)
        # trajectories, not results: the random strategies count each trajectory once per seed
        single = part.filter(~pl.col("strategy").str.starts_with("random"))
        n = int((single if single.height else part)["n"].max())
        ax.set_title(f"{source} (n={n} trajectories)")
        ax.set_xlabel("κ (fraction of steps pruned)")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    panels[0][1].set_ylabel(f"accuracy ({level:.0%} bootstrap CI)")
    panels[0][1].legend(title="strategy")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_tokens(curve, path: Path) -> None:
    import polars as pl

    plt, fig, panels = _panels(curve, sharey=False)  # sources differ in CoT length
    for source, ax in panels:
        part = curve.filter(pl.col("source") == source)
        for strategy, g in part.group_by("strategy", maintain_order=True):
            g = g.sort("kappa")
            ax.plot(
                g["kappa"],
                g["kept_thinking_tokens"],
                marker="o",
                color=STYLE.get(strategy[0]),
                label=strategy[0],
            )
        ax.set_title(source)
        ax.set_xlabel("κ (fraction of steps pruned)")
        ax.grid(alpha=0.3)
    panels[0][1].set_ylabel("mean thinking tokens kept")
    panels[0][1].legend(title="strategy")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _figure(n_panels: int, width: float = 4.2, sharey: bool = False):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        1, n_panels, figsize=(width * n_panels, 3.6), squeeze=False, sharey=sharey
    )
    return plt, fig, list(axes[0])


def plot_bench_lengths(rows, path: Path) -> None:
    """bench: completion-length histograms of correct and wrong rows, one panel per model."""
    import numpy as np
    import polars as pl

    models = rows["model"].unique(maintain_order=True).to_list()
    plt, fig, axes = _figure(len(models), sharey=True)
    bins = np.linspace(0, max(1, int(rows["n_tokens"].max())), 31)
    for model, ax in zip(models, axes, strict=True):
        part = rows.filter(pl.col("model") == model)
        for correct, color in ((True, "C2"), (False, "C3")):
            lengths = part.filter(pl.col("correct") == correct)["n_tokens"].to_numpy()
            label = f"{'correct' if correct else 'wrong'} (n={lengths.size})"
            ax.hist(lengths, bins=bins, alpha=0.55, color=color, label=label)
        ax.set_title(model)
        ax.set_xlabel("completion tokens")
        ax.legend(fontsize=8)
    axes[0].set_ylabel("rows (all benchmarks)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_bench_frontier(table, path: Path, budgets=()) -> None:
    """bench: accuracy (with CI bars) against mean completion tokens, one point per model, one
    panel per benchmark: up and to the left is better. The budget-forcing baselines
    (``budgets``) are also joined into a dashed curve: a model above it beats truncating the base
    at equal cost, one below it does not."""
    import polars as pl

    benches = [
        b for b in table["benchmark"].unique(maintain_order=True).to_list() if b != "average"
    ]
    plt, fig, axes = _figure(len(benches))
    names = table["model"].unique(maintain_order=True).to_list()
    # one colour per entry across panels; past ten, tab20 so that no two entries share one
    colours = [plt.get_cmap("tab20" if len(names) > 10 else "tab10")(i) for i in range(len(names))]
    for bench, ax in zip(benches, axes, strict=True):
        part = table.filter(pl.col("benchmark") == bench).sort("len")
        for i, r in enumerate(part.iter_rows(named=True)):
            err = [[r["acc"] - r["acc_low"]], [r["acc_high"] - r["acc"]]]
            colour = colours[names.index(r["model"]) % len(colours)]
            ax.errorbar(r["len"], r["acc"], yerr=err, fmt="o", color=colour, capsize=3)
            ax.annotate(  # offsets cycle along the cost axis: neighbours' labels stay apart
                r["model"],
                (r["len"], r["acc"]),
                fontsize=7,
                xytext=LABEL_OFFSETS[i % len(LABEL_OFFSETS)],
                textcoords="offset points",
            )
        curve = table.filter((pl.col("benchmark") == bench) & pl.col("model").is_in(budgets))
        if curve.height > 1:
            curve = curve.sort("len")
            ax.plot(curve["len"], curve["acc"], "--", color="grey", label="budget forcing")
            ax.legend(fontsize=8, loc="lower right")
        ax.set_title(bench)
        ax.set_xlabel("mean completion tokens")
        ax.set_ylim(0, 1.02)  # accuracies compared from 0: a zoomed axis inflates differences
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy (pass@1, 95% CI)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_frontier(curve, path: Path, level: float = 0.95) -> None:
    """Accuracy against mean thinking tokens kept, every kappa pooled on one cost axis: one
    curve per strategy with its CI band, so strategies are compared at equal cost, not equal
    kappa. One panel per source."""
    import polars as pl

    plt, fig, panels = _panels(curve, sharey=True)
    for source, ax in panels:
        part = curve.filter(pl.col("source") == source)
        for i, (strategy, g) in enumerate(part.group_by("strategy", maintain_order=True)):
            g = g.sort("kept_thinking_tokens")
            color = STYLE.get(strategy[0], f"C{(i + 4) % 10}")
            x = g["kept_thinking_tokens"]
            ax.plot(x, g["accuracy"], marker="o", ms=3, color=color, label=strategy[0])
            ax.fill_between(x, g["ci_low"], g["ci_high"], color=color, alpha=0.12)
        ax.set_title(source)
        ax.set_xlabel("mean thinking tokens kept")
        ax.grid(alpha=0.3)
    panels[0][1].set_ylabel(f"accuracy ({level:.0%} bootstrap CI)")
    panels[0][1].legend(title="strategy", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
