"""What prompt tuning optimises and how a prompt is scored, per task kind (see ``factory``)."""
from promptgrid.errors import InputError

#: backbone kinds that run span QA / NER as text to text (the others tag words)
TEXT_BACKBONES = ("causal_lm", "seq2seq")
TAGGING_BACKBONES = ("encoder", "masked_lm")


class ObjectiveError(InputError):
    """A task kind has no path on a backbone kind; the message names both. Bad input: the command exits 2."""
