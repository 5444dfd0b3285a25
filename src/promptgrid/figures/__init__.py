"""Figure kinds, one file each, registered in :data:`promptgrid.registry.FIGURES` on import.

A kind file draws from DataFrames (never paths) and registers a :class:`~promptgrid.registry.FigureSpec`:
the tables it reads, its variants for a study, its report category, caption and labels. ``base`` (light)
and ``style`` (matplotlib / seaborn) are what the kinds share.
"""
#: modules of this package that register nothing (promptgrid.pipeline.plugins skips them)
HELPERS = ("base", "style")
