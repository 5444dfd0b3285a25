"""The figure verb: draw every variant of one figure kind for one backbone (one Python and seaborn start-up
per kind, not per panel). Generic over the figure registry (:data:`promptgrid.registry.FIGURES`)."""
from __future__ import annotations

from promptgrid.pipeline.context import Study
from promptgrid.registry import FIGURES
from promptgrid.storage import layout
from promptgrid.storage.files import read_table


def figure(study: Study, kind: str, backbone: str) -> None:
    """Every variant of figure ``kind`` for ``backbone``, as PNG and PDF where the layout puts them."""
    from promptgrid.figures.style import save_figure

    spec = FIGURES.require(kind)
    tables = {name: read_table(study.path(layout.table(name))) for name in spec.tables}
    for variant in spec.variants(study.cfg):
        fig = spec.draw(tables, study.cfg, backbone, variant)
        stem = study.path(layout.figure_stem(backbone, kind, variant))
        save_figure(fig, f"{stem}.png", f"{stem}.pdf")
        print(f"[figure] {stem}.png/.pdf", flush=True)
