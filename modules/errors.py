"""User-facing error types.

Every error a user can cause (a bad file, a wrong flag, a mismatched model) is raised as a
subclass of :class:`SvcError` whose message names the offending file or value and says how to
fix it. Scripts turn these into one line on stderr and a non-zero exit (see ``modules.cli``);
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class SvcError(Exception):
    """Base class for errors caused by user input (files, flags, configs)."""


class ConfigError(SvcError):
    """A configuration file is missing, unreadable or has an unknown / invalid key."""


class CheckpointError(SvcError):
    """A model file is missing, truncated, of the wrong kind or does not fit the model."""


class UnsafeFileError(CheckpointError):
    """A model file references code outside the allow-list; it was refused, never executed."""


class AudioError(SvcError):
    """An audio file is missing, empty, not audio, or holds NaN/inf samples."""


class MissingPretrainedError(CheckpointError):
    """A pretrained weight file is not where it is expected."""
