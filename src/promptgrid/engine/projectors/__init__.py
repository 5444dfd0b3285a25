"""Cross-model projectors, one file each, registered in :data:`promptgrid.registry.PROJECTORS` on import.

A projector file registers a :class:`~promptgrid.registry.ProjectorSpec`: its name (what
``cross_model.projectors`` lists), summary, paper and ``build(length, d_a, d_b, hidden, out_scale)``, which
returns the untrained ``torch.nn.Module`` (N, L, d_a) -> (N, L, d_b). Registering stays torch-free: torch is
imported inside ``build``. :mod:`promptgrid.engine.projection` seeds, wraps, fits and applies them;
``promptgrid.pipeline.plugins.load`` imports every module of this package.
"""
