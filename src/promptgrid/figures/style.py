"""Figures of a transferability study, drawn from the long tables in ``.contracts.md``.

Every ``*_heatmap``/``*_scatter``/``*_bars``/``*_curves`` function takes DataFrames (not paths) and
returns a :class:`matplotlib.figure.Figure`; :func:`save_figure` writes it as PNG and PDF.

Figures are built with :class:`~matplotlib.figure.Figure` directly and rendered by the Agg canvas,
never through pyplot, so importing this module changes no global backend or pyplot state, and a
figure that is dropped is simply garbage-collected. Seaborn draws into the axes we pass in.

Reading the figures back (what the tests and any caller can rely on):
- heatmaps: ``fig.axes[0]`` is the heatmap (rows = sources, columns = targets), the colour bar follows;
- ``metric_scatter``: exactly one axes per target, in sorted target order;
- ``correlation_bars``: ``fig.axes[0].containers[0]`` holds one bar per metric;
- ``topk_curves``: lines carry the labels of their metric, ``"oracle"`` and ``"random"``.

Missing values: a filter that matches nothing, or a missing column, raises ``ValueError`` naming the
table, the filter or the column; absent methods or metrics are simply not drawn.
"""
from __future__ import annotations

import textwrap
import warnings
from typing import Mapping, Optional, Sequence

import matplotlib
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from promptgrid.figures.base import BASELINE, BASELINE_COLOUR, NO_FAMILY, family_order
from promptgrid.registry import METHODS
from promptgrid.storage.files import atomic_path

# applied at save time: TrueType fonts in the PDF (editable text), no timestamps or salts
_SAVE_RC = {"pdf.fonttype": 42, "svg.hashsalt": "promptgrid", "path.simplify": True}


PNG_METADATA = {"Software": f"promptgrid (matplotlib {matplotlib.__version__})"}


PDF_METADATA = {"CreationDate": None, "ModDate": None, "Creator": "promptgrid",
                "Producer": f"matplotlib {matplotlib.__version__}"}


# ---------------------------------------------------------------- sizes for the HTML report
#: Snakemake's HTML report (``snakemake --report``) shows each PNG at CSS max-width 100 % of a content pane
#: about REPORT_VIEW_WIDTH_PX wide: a wider PNG is shrunk, and its text with it. A PNG is therefore rendered
#: at most this many pixels wide (a little more than the pane, so it stays sharp on zoom and dense screens);
#: a wide figure gets a lower dpi instead of more pixels. PDFs are vector and keep their full size.
REPORT_PNG_WIDTH_PX = 1000
#: the report's content pane (px), where a figure's text size is judged
REPORT_VIEW_WIDTH_PX = 780
#: PNG resolution of a figure narrow enough to need no less (REPORT_PNG_WIDTH_PX / 150 = 6.7 in)
PNG_MAX_DPI = 150
#: the widest figure any kind draws (inches): shown REPORT_VIEW_WIDTH_PX wide that is 92 px per inch, so
#: the body text (9.7-10.6 pt: seaborn's paper context at font_scale 1.1) reads at 12-13 px, legends
#: ("small", 8.8 pt) at 11 px and the smallest text drawn (7-pt heatmap annotations) at 9 px. Kinds whose
#: size grows with the grid wrap panels, rotate labels or narrow their cells to stay within it.
MAX_FIGURE_WIDTH_IN = 8.5


def png_dpi(fig: Figure) -> float:
    """The PNG resolution of ``fig``: PNG_MAX_DPI, or less so that the PNG is at most REPORT_PNG_WIDTH_PX wide."""
    return min(PNG_MAX_DPI, REPORT_PNG_WIDTH_PX / fig.get_figwidth())


# ---------------------------------------------------------------- saving
def save_figure(fig: Figure, out_png, out_pdf, dpi: Optional[float] = None) -> None:
    """Write ``fig`` to ``out_png`` and ``out_pdf``, each atomically and byte-reproducibly.

    The PNG is rendered at ``dpi``, by default :func:`png_dpi` (at most REPORT_PNG_WIDTH_PX wide, for the
    HTML report); the PDF is vector (``dpi`` only sizes rasterised artists, of which there are none).
    Each file is rendered into a temporary file beside its destination and renamed into place
    (:func:`promptgrid.storage.files.atomic_path`), so an interrupted job never leaves a half-written
    figure that Snakemake would take as done.
    Metadata is fixed (no creation date; PNG carries only ``Software``), so the same figure saved
    twice gives identical bytes.
    """
    FigureCanvasAgg(fig)  # attach the Agg canvas whatever pyplot's backend is
    if fig.get_layout_engine() is not None:
        # constrained layout is not idempotent (a second pass shifts axes by a pixel or so): run it
        # once, then freeze the positions, so every save of this figure gives the same bytes
        fig.draw_without_rendering()
        fig.set_layout_engine("none")
    png_res = png_dpi(fig) if dpi is None else dpi
    for path, fmt, res, meta in ((out_png, "png", png_res, PNG_METADATA),
                                 (out_pdf, "pdf", PNG_MAX_DPI if dpi is None else dpi, PDF_METADATA)):
        with atomic_path(path) as tmp, matplotlib.rc_context(_SAVE_RC):
            fig.savefig(tmp, format=fmt, dpi=res, metadata=meta)


# ---------------------------------------------------------------- checks and helpers
def family_colours(families_in_use: Sequence[str]) -> dict[str, tuple]:

    pal = sns.color_palette("colorblind", max(len(families_in_use), 1))
    return {fam: ("0.35" if fam == NO_FAMILY else pal[i]) for i, fam in enumerate(families_in_use)}


def new_figure(width: float, height: float) -> Figure:
    """A constrained-layout figure, at most MAX_FIGURE_WIDTH_IN wide (a wider ``width`` is capped: kinds
    lay themselves out within the cap, this keeps any figure legible in the report)."""
    fig = Figure(figsize=(min(width, MAX_FIGURE_WIDTH_IN), height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def method_palette(labels: Sequence[str]) -> dict[str, tuple]:
    """Colour per label "<method>[ (variant)]": the method's colour, variants in darker/lighter shades."""

    out, by_method = {}, {}
    for lab in labels:
        by_method.setdefault(lab.split(" ")[0], []).append(lab)
    extra = iter(sns.color_palette("colorblind")[5:] * 3)
    for method, labs in by_method.items():
        spec = METHODS.get(method)
        base = BASELINE_COLOUR if method == BASELINE else spec.colour if spec is not None else next(extra)
        shades = [base] if len(labs) == 1 else sns.light_palette(base, len(labs) + 2)[2:]
        if len(labs) > 1 and labs[0] == method:  # the plain method keeps its own colour
            shades = [base] + list(sns.dark_palette(base, len(labs) + 1, reverse=True)[1:len(labs)])
        out.update(zip(labs, shades))
    return out


def wrap(text: str, fig: Figure, scale: float = 1.0) -> str:
    """Wrap a title to the figure's width (about 9 bold characters per inch at the title size)."""
    return textwrap.fill(text, width=max(24, int(fig.get_figwidth() * 9 * scale)), break_long_words=False)


# ---------------------------------------------------------------- heatmaps
def task_heatmap(matrix: pd.DataFrame, families: Mapping[str, str], *, title: str, cbar_label: str,
                  fmt: str, cmap: str, center: Optional[float]) -> Figure:
    """Heatmap of a sources × targets matrix, rows and columns ordered and coloured by task family.

    Family blocks are separated by lines and named to the right of the rows; tick labels take the
    family colour, so the grouping reads on both axes.
    """

    rows = family_order(matrix.index, families)
    cols = family_order(matrix.columns, families)
    matrix = matrix.reindex(index=[r for r, _ in rows], columns=[c for c, _ in cols])
    fams_in_use = list(dict.fromkeys([f for _, f in rows] + [f for _, f in cols]))
    colour = family_colours(fams_in_use)

    n_rows, n_cols = matrix.shape
    # 0.75 in per column up to MAX_FIGURE_WIDTH_IN (2.6 in go to labels, family names and margins)
    width = min(MAX_FIGURE_WIDTH_IN, max(5.0, 2.6 + 0.75 * n_cols))
    fig = new_figure(width, max(4.2, 2.2 + 0.42 * n_rows))
    ax = fig.add_subplot()
    annot_size = 9 if n_rows * n_cols <= 100 else 7
    # a cell narrower than a 7-pt "-12.3" shows its value by colour only (the colour bar reads it)
    annotate = (width - 2.6) / n_cols >= 0.4
    values = matrix.to_numpy(float)
    if not np.isfinite(values).any():
        raise ValueError(f"{title}: every cell is NaN, nothing to draw")
    vmin = vmax = None
    if center is not None:
        # symmetric limits: equal colour intensity means equal distance from the centre on both sides
        spread = float(np.nanmax(np.abs(values - center))) or 1.0
        vmin, vmax = center - spread, center + spread
    with warnings.catch_warnings():
        # seaborn 0.13 calls Colormap.set_bad, which matplotlib >= 3.11 flags as pending deprecation
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        sns.heatmap(matrix, ax=ax, annot=annotate, fmt=fmt, annot_kws={"size": annot_size}, cmap=cmap, center=center,
                    vmin=vmin, vmax=vmax, linewidths=0.5, linecolor="white",
                    cbar_kws={"label": cbar_label, "location": "bottom", "shrink": 0.8, "aspect": 30})
    ax.grid(False)
    ax.set_facecolor("0.9")  # pairs that were not run (NaN) show as plain grey
    ax.set_title(wrap(title, fig))
    ax.set_xlabel("target task")
    ax.set_ylabel("source task")
    ax.tick_params(axis="x", labelrotation=45, labeltop=False)
    for lab in ax.get_xticklabels():
        lab.set_horizontalalignment("right")
        lab.set_rotation_mode("anchor")
    for lab, (_, fam) in zip(ax.get_yticklabels(), rows):
        lab.set_color(colour[fam])
        lab.set_rotation(0)
    for lab, (_, fam) in zip(ax.get_xticklabels(), cols):
        lab.set_color(colour[fam])

    # family separators and names: rows (names to the right), columns (separators only)
    row_fams = [f for _, f in rows]
    start = 0
    for i in range(1, n_rows + 1):
        if i == n_rows or row_fams[i] != row_fams[start]:
            if i < n_rows:
                ax.axhline(i, color="black", linewidth=1.6)
            ax.text(1.02, (start + i) / 2, row_fams[start], transform=ax.get_yaxis_transform(),
                    ha="left", va="center", color=colour[row_fams[start]], fontweight="bold", clip_on=False)
            start = i
    col_fams = [f for _, f in cols]
    for j in range(1, n_cols):
        if col_fams[j] != col_fams[j - 1]:
            ax.axvline(j, color="black", linewidth=1.6)
    return fig

