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
            mid = sorted(samples)[len(samples) // 2]
            ax.annotate(
                f"{mid:.0f}" if mid >= 10 else f"{mid:.1f}",
                (positions[v], mid),
                xytext=(0, 3),
                textcoords="offset points",
                ha="center",
                fontsize=7,
            )
        ax.plot([], [], color=COLOURS[i], linewidth=8, label=label)
    ax.set_xticks(range(len(verbs)), verbs)
    ax.set_yscale("log")
    ax.set_ylabel("ms per call (log scale)")
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


def bars(
    path: Path,
    title: str,
    unit: str,
    groups: Mapping[str, Mapping[str, Sequence[float]]],
) -> Path:
    """Grouped bars: per group (a comparison), each configuration's median, with its samples
    as dots."""
    fig, ax = plt.subplots(figsize=(9, 4.2))
    for g, configs in enumerate(groups.values()):
        width = 0.8 / max(1, len(configs))
        for i, (config, samples) in enumerate(configs.items()):
            x = g + (i - (len(configs) - 1) / 2) * width
            mid = sorted(samples)[len(samples) // 2] if samples else 0.0
            ax.bar(x, mid, width * 0.9, color=COLOURS[i % len(COLOURS)], alpha=0.85)
            ax.scatter([x] * len(samples), samples, color="black", s=8, zorder=3)
            ax.annotate(
                f"{config}\n{mid:.2f}",
                (x, mid),
                xytext=(0, 3),
                textcoords="offset points",
                ha="center",
                fontsize=7,
            )
    ax.set_xticks(range(len(groups)), list(groups))
    ax.set_ylabel(unit)
    ax.set_ylim(top=ax.get_ylim()[1] * 1.15)
    ax.set_title(title, fontsize=11)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)
