"""Transfer methods, one file each, registered in :data:`promptgrid.registry.METHODS` on import.

A method file defines a :class:`~promptgrid.registry.MethodSpec`: its name, colour and place in the
figures, its typed config section (``transfer.<name>``), what it reads (similarity metrics, other
methods' runs) and either ``plan`` (the runs of a prompt bank the engine trains) or ``evaluate``
(scores of source prompts used as they are). ``promptgrid.pipeline.plugins.load`` imports every
module of this package.
"""
