"""Matplotlib figures for the benchmarks: headless subplots and one way to title, save and close them."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def subplots(*args: Any, **kwargs: Any) -> tuple[Any, Any]:
    """`plt.subplots` on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(*args, **kwargs)


def label_axes(ax: Any, xlabel: str, ylabel: str, title: str | None = None, **legend: Any) -> None:
    """Axis labels, optional title, a light grid on major and minor ticks, and the legend."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(**legend)


def save(fig: Any, path: Path, title: str | None = None, dpi: int = 110) -> Path:
    """Title (optional), lay out, write the PNG (creating its folder) and free the figure."""
    import matplotlib.pyplot as plt

    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
