"""The two kinds of error a user can fix, and the exit code the ``promptgrid`` command gives each.

Anything else that escapes a verb is a bug (or the machine's fault, such as a CUDA error): the command exits 1
and prints its traceback. Both classes subclass the built-in they refine, so ``except ValueError`` /
``except FileNotFoundError`` still catch them.
"""
from __future__ import annotations


class InputError(ValueError):
    """Bad input the user can fix: a config value, a data row, a file of the wrong shape. Exit code 2."""

    exit_code = 2


class MissingResource(FileNotFoundError):
    """A model, data file, fetched artifact or hub object that is not there or cannot be reached. Exit code 3."""

    exit_code = 3


class UnknownName(InputError, KeyError):
    """A name (a backbone, task, method, metric, projector...) that the study or a registry does not define,
    given on the command line or in a config. Exit code 2. Also a ``KeyError``, as a failed look-up is."""

    # KeyError's str() quotes its message like a repr; this one is a sentence for the user
    __str__ = BaseException.__str__
