"""The one error type of ``results``: what is wrong and how to fix it, for the command line to print."""

from __future__ import annotations


class ResultsError(ValueError):
    """A study's results cannot be read or reported as asked; the message says why and what to do."""
