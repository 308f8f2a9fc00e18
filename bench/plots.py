"""The benchmark's pictures (matplotlib, drawn off-screen to PNG).

Each function writes one PNG and returns its path. Colours are fixed per side (pycni blue, Go
orange) so every figure reads the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import numpy

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
            mid = float(numpy.median(samples))
            top = float(numpy.percentile(samples, 95))  # the whisker's end
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
    low, high = ax.get_ylim()
    ax.set_ylim(low, high * 1.6)  # room for the labels above the whiskers
    ax.yaxis.set_major_locator(FixedLocator([1, 2, 5, 10, 20, 50, 100, 200, 500]))
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_ylabel("ms per call (log scale; label: median)")
    ax.set_title(title, fontsize=11)
    ax.grid(axis="y", which="both", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
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
    window = min(50, max(1, len(next(iter(adds.values()), [])) // 4))
    count = len(next(iter(adds.values()), []))
    ax.axvspan(0.5, window + 0.5, color="grey", alpha=0.08)
    ax.axvspan(count - window + 0.5, count + 0.5, color="grey", alpha=0.08)
    ax.set_xlabel("pod index on the node (pods already there + 1); shaded: the windows compared")
    ax.set_ylabel("ADD, ms")
    every = sorted(x for samples in adds.values() for x in samples)
    top = every[int(len(every) * 0.98)] * 1.3 if every else 1.0
    ax.set_ylim(0, top)
    cut = sum(x > top for x in every)
    if cut:
        ax.text(
            0.99,
            0.97,
            f"{cut} call(s) above {top:.0f} ms not shown",
            transform=ax.transAxes,
            ha="right",
            va="top",
            fontsize=7,
            alpha=0.7,
        )
    ax.set_title(title + " (dots: calls; lines: running median of 15)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    return _save(fig, path)


def running_median(samples: Sequence[float], window: int) -> list[float]:
    half = window // 2
    return [
        float(numpy.median(samples[max(0, n - half) : n + half + 1])) for n in range(len(samples))
    ]


def bars(path: Path, title: str, unit: str, samples: Mapping[str, Sequence[float]]) -> Path:
    """One bar per configuration: its median, labelled, with every run as a dot."""
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for i, runs in enumerate(samples.values()):
        mid = float(numpy.median(runs))
        ax.bar(i, mid, 0.6, color=COLOURS[i % len(COLOURS)], alpha=0.85)
        ax.scatter([i] * len(runs), runs, color="black", s=10, zorder=3)
        ax.annotate(f"{mid:.2f}", (i, mid), xytext=(0, 4), textcoords="offset points", ha="center")
    ax.set_xticks(range(len(samples)), list(samples))
    ax.set_ylabel(unit)
    ax.set_ylim(0, ax.get_ylim()[1] * 1.12)
    ax.set_title(title, fontsize=11)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)
