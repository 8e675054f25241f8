"""User-facing errors and the one-line exit used by every script.

Library code raises :class:`MetasegError` (config validation raises its ``ConfigError``) with a
message that says what was wrong, which file or flag, and what to do. Scripts wrap their
``main`` with :func:`exit_on_error` so such a mistake ends in exactly one line on stderr and
a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import functools
import sys


class MetasegError(Exception):
    """A problem with the user's input (data, flags, checkpoint) rather than a bug."""


class ConfigError(MetasegError, ValueError):
    """A flag or config value that is out of range or inconsistent with another."""


class DataError(MetasegError):
    """Unreadable, malformed or insufficient data on disk."""


class CheckpointError(MetasegError):
    """A checkpoint that is missing, foreign or does not fit the model."""


class Interrupted(MetasegError):
    """Ctrl-C (SIGINT): the message says what was kept and how to go on."""

    exit_code = 130  # the shell's convention for a process ended by SIGINT


EXIT_USER_ERROR = 2


def exit_on_error(main):
    """Decorate a ``main(argv)``: turn a MetasegError into ``error: ...`` + exit 2 (130 for
    ``Interrupted``)."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except MetasegError as e:
            message = " ".join(str(e).split())  # exactly one line
            print(f"error: {message}", file=sys.stderr, flush=True)
            sys.exit(getattr(e, "exit_code", EXIT_USER_ERROR))

    return wrapper
