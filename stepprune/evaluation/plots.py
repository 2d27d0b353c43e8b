"""PNG plots of an eval: accuracy against kappa with CI bands (the paper's Figure 1), and kept
thinking tokens against kappa, one panel per source, one line per strategy."""

from __future__ import annotations

from pathlib import Path

STYLE = {"low": "C0", "high": "C3", "random": "C7", "token": "C2"}


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
            ax.plot(g["kappa"], g["accuracy"], marker="o", color=color, label=strategy[0])
            ax.fill_between(g["kappa"], g["ci_low"], g["ci_high"], color=color, alpha=0.15)
        n = int(part["n"].max())
        ax.set_title(f"{source} (n={n})")
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
