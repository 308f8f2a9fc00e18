"""The benchmark's pictures (matplotlib, drawn off-screen to PNG).

Each function writes one PNG and returns its path. Colours are fixed per side (pycni blue, Go
orange) so every figure reads the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, NullFormatter, ScalarFormatter

COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd")


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def distributions(
    path: Path,
    title: str,
    verbs: Sequence[str],
    ms: Mapping[str, Mapping[str, Sequence[float]]],
    *,
    note: str = "",
) -> Path:
    """Per verb, side by side, each implementation's latency distribution (box: quartiles,
    whiskers: 5th-95th percentile, line: median) on a log scale."""
    labels = list(ms)
    fig, ax = plt.subplots(figsize=(9, 4.2))
    width = 0.8 / len(labels)
    for i, label in enumerate(labels):
        positions = [v + (i - (len(labels) - 1) / 2) * width for v in range(len(verbs))]
        data = [list(ms[label].get(verb, [])) or [float("nan")] for verb in verbs]
        box = ax.boxplot(
            data,
            positions=positions,
            widths=width * 0.85,
            whis=(5, 95),
            showfliers=False,
            patch_artist=True,
            medianprops={"color": "black"},
        )
        for patch in box["boxes"]:
            patch.set_facecolor(COLOURS[i])
            patch.set_alpha(0.8)
        for v, samples in enumerate(data):
            ordered = sorted(samples)
            mid = ordered[len(ordered) // 2]
            top = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
            ax.annotate(
                f"{mid:.0f}" if mid >= 10 else f"{mid:.1f}",
                (positions[v], top),
                xytext=(0, 3),
                textcoords="offset points",
                ha="center",
                fontsize=7,
            )
        ax.plot([], [], color=COLOURS[i], linewidth=8, label=label)
    ax.set_xticks(range(len(verbs)), verbs)
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(FixedLocator([1, 2, 5, 10, 20, 50, 100, 200, 500]))
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_ylabel("ms per call (log scale; label: median)")
    ax.set_title(title, fontsize=11)
    ax.grid(axis="y", which="both", alpha=0.3)
    ax.legend(loc="upper left")
    if note:
        ax.text(0.99, 0.02, note, transform=ax.transAxes, ha="right", fontsize=7, alpha=0.7)
    return _save(fig, path)


def scale_curve(path: Path, title: str, adds: Mapping[str, Sequence[float]]) -> Path:
    """ADD latency against the pod's index (dots), with a running median (line)."""
    fig, ax = plt.subplots(figsize=(9, 4.2))
    for i, (label, samples) in enumerate(adds.items()):
        xs = range(1, len(samples) + 1)
        ax.scatter(xs, samples, s=6, color=COLOURS[i], alpha=0.35)
        ax.plot(xs, running_median(samples, 15), color=COLOURS[i], linewidth=2, label=label)
    ax.set_xlabel("pod index on the node (pods already there + 1)")
    ax.set_ylabel("ADD, ms")
    ax.set_ylim(bottom=0)
    ax.set_title(title, fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    return _save(fig, path)


def running_median(samples: Sequence[float], window: int) -> list[float]:
    out = []
    for n in range(len(samples)):
        part = sorted(samples[max(0, n - window // 2) : n + window // 2 + 1])
        out.append(part[len(part) // 2])
    return out


def bars(path: Path, title: str, unit: str, samples: Mapping[str, Sequence[float]]) -> Path:
    """One bar per configuration: its median, labelled, with every run as a dot."""
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for i, runs in enumerate(samples.values()):
        mid = sorted(runs)[len(runs) // 2]
        ax.bar(i, mid, 0.6, color=COLOURS[i % len(COLOURS)], alpha=0.85)
        ax.scatter([i] * len(runs), runs, color="black", s=10, zorder=3)
        ax.annotate(f"{mid:.2f}", (i, mid), xytext=(0, 4), textcoords="offset points", ha="center")
    ax.set_xticks(range(len(samples)), list(samples))
    ax.set_ylabel(unit)
    ax.set_ylim(0, ax.get_ylim()[1] * 1.12)
    ax.set_title(title, fontsize=11)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)
