"""A picture of the table: one small bar chart per measure, a bar per input (matplotlib, imported when called).

Each measure keeps its own axis, so measures of different scales need no
normalising. ``.png``, ``.svg`` and ``.pdf`` are written by matplotlib; an
``.html`` file is a page holding the PNG inline.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
from collections.abc import Mapping
from pathlib import Path

from backtrack_sampler.metrics.mining import INSTALL_HINT
from backtrack_sampler.metrics.report import COUNTS, TextsReport, row_value, shown_rows

PLOT_SUFFIXES = (".png", ".svg", ".pdf", ".html")
_SKIPPED = {*COUNTS, "words_per_text"}  # sizes, not measures


def load_pyplot():
    """``matplotlib.pyplot`` drawing to files only; ``ImportError`` saying how to install it."""
    try:
        import matplotlib
    except ImportError:
        raise ImportError(f"plotting needs matplotlib; install it with: {INSTALL_HINT}") from None
    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def plot_reports(reports: Mapping[str, TextsReport], path: str | os.PathLike[str]) -> Path:
    """Draw ``reports`` side by side into ``path`` (its suffix picks the format); returns the path.

    Raises:
        ValueError: the suffix is not one of ``PLOT_SUFFIXES``.
        ImportError: matplotlib is not installed (the message says how to install it).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in PLOT_SUFFIXES:
        raise ValueError(f"the plot's file name must end in {', '.join(PLOT_SUFFIXES)}, got {str(path)!r}")
    plt = load_pyplot()
    rows = [row for row in shown_rows(reports) if row.attribute not in _SKIPPED]
    columns = 3
    lines = math.ceil(len(rows) / columns)
    figure, axes = plt.subplots(lines, columns, figsize=(4 * columns, 2.6 * lines), squeeze=False)
    names = list(reports)
    colours = [f"C{i}" for i in range(len(names))]
    for ax, row in zip(axes.flat, rows, strict=False):
        values = [row_value(reports[name], row.attribute) for name in names]
        ax.bar(range(len(names)), values, color=colours)
        ax.set_title(row.label.lstrip("- ") + (f" ({row.better} is better)" if row.better else ""), fontsize=9)
        ax.set_xticks(range(len(names)), [name[-24:] for name in names], fontsize=8)
        for i, value in enumerate(values):
            ax.annotate(row.fmt.format(value), (i, value), ha="center", va="bottom", fontsize=8)
        ax.margins(y=0.2)
        if not any(values):
            ax.set_ylim(0, 1)  # all zero: a flat axis at 0, not one centred on it
    for ax in list(axes.flat)[len(rows) :]:
        ax.axis("off")
    figure.tight_layout()
    if suffix == ".html":
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=100)
        image = base64.b64encode(buffer.getvalue()).decode("ascii")
        title = html.escape(" vs ".join(names))
        path.write_text(
            f'<!doctype html><meta charset="utf-8"><title>{title}</title>\n'
            f'<img alt="{title}" src="data:image/png;base64,{image}">\n',
            encoding="utf-8",
        )
    else:
        figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
