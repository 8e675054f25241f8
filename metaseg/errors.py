"""User-facing errors and the one-line exit used by every script.

Library code raises :class:`MetasegError` (config validation raises its ``ConfigError``) with a
message that says what was wrong, which file or flag, and what to do. Scripts wrap their
``main`` with :func:`exit_on_error` so such a mistake ends in exactly one line on stderr and
a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import contextlib
import functools
import re
import sys
from typing import Callable


class MetasegError(Exception):
    """A problem with the user's input (data, flags, checkpoint) rather than a bug."""


class ConfigError(MetasegError, ValueError):
    """A flag or config value that is out of range or inconsistent with another."""


class FieldError(ConfigError):
    """A config value out of range or inconsistent with another; ``field`` is its path in
    ``RunConfig`` (e.g. ``"eval.eval_batch"``).

    The message names config fields as ``{eval.eval_batch}`` (see :func:`field`): ``str()``
    shows the paths, and a command line shows its own flag for each (:func:`named_as`), so a
    ``run_metasegnet.py`` user reads ``--eval-batch`` and a ``metaseg`` user that command's
    spelling.
    """

    def __init__(self, field_path: str, template: str,
                 name_of: Callable[[str], str] = lambda path: path):
        self.field, self.template = field_path, template
        super().__init__(self.spelled(name_of))

    def spelled(self, name_of: Callable[[str], str]) -> str:
        """The message with every ``{field path}`` replaced by ``name_of(field path)``."""
        return _FIELD.sub(lambda m: name_of(m.group(1)), self.template)


_FIELD = re.compile(r"\{([a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)*)\}")


def field(path: str) -> str:
    """``path`` marked for a FieldError message: ``f"{field('eval.shots')} must be ..."``."""
    return "{" + path + "}"


@contextlib.contextmanager
def named_as(name_of: Callable[[str], str]):
    """Inside: a FieldError is raised again with its fields spelt ``name_of(path)`` (a command
    line's flags), the same ``field``."""
    try:
        yield
    except FieldError as e:
        raise FieldError(e.field, e.template, name_of) from None


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
