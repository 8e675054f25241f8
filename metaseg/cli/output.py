"""Where ``metaseg`` commands write: the ``--output`` folder or file, checked before any work,
and files that appear under their final name only when complete.

A path under a file (``--output notes.txt/out``), a folder that cannot be created or written
(a read-only file system, no permission, a full disk) is refused in one ``DataError`` line
naming the flag and the path, before a model is built. :func:`replaced` writes one file (or
SavedModel folder) under a hidden temporary name beside its final one and renames it into
place, so an interrupted or failed write never leaves a partial file under the final name.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from typing import Iterator, Optional, Tuple, Type

from metaseg.errors import DataError

TEMP_SUFFIX = ".tmp"  # not an image extension: a folder listing never takes it for an image


def _reason(error: BaseException) -> str:
    return (getattr(error, "strerror", None) or " ".join(str(error).split())[:300]
            or type(error).__name__)


def _nearest_existing(path: str) -> str:
    path = os.path.abspath(path)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return path


def check_writable(folder: str, flag: str, named: Optional[str] = None) -> None:
    """DataError unless ``folder`` can be created (if missing) and written: no part of its
    path is a file, and a test file can be made in its nearest existing ancestor. The
    message names ``flag`` and ``named`` (default ``folder``)."""
    path = folder if named is None else named
    existing = _nearest_existing(folder)
    if not os.path.isdir(existing):
        raise DataError(f"{flag} {path}: {existing} is a file, not a folder; choose another "
                        f"{flag}")
    try:
        handle, probe = tempfile.mkstemp(prefix=".metaseg-write-test-", suffix=TEMP_SUFFIX,
                                         dir=existing)
        os.close(handle)
        os.remove(probe)
    except OSError as e:
        raise DataError(f"{flag} {path}: cannot write in {existing} ({_reason(e)}); choose "
                        f"another {flag}") from None


def prepare_folder(directory: str, overwrite: bool, flag: str = "--output") -> None:
    """Refuse a non-empty output folder unless ``overwrite``, or one that cannot be written;
    create it otherwise."""
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise DataError(f"{flag} {directory} exists and is not a folder; choose another {flag}")
    if os.path.isdir(directory) and os.listdir(directory) and not overwrite:
        raise DataError(f"output folder {directory} is not empty; choose another {flag} or "
                        "pass --overwrite (files of the same names are then replaced)")
    check_writable(directory, flag)
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as e:
        raise DataError(f"{flag} {directory}: cannot create it ({_reason(e)}); choose another "
                        f"{flag}") from None


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.remove(path)


def _put_in_place(temporary: str, path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):  # a folder cannot be replaced by rename
        old = f"{temporary}.old"
        os.rename(path, old)
        try:
            os.rename(temporary, path)
        except OSError:
            os.rename(old, path)  # the previous folder back under its name
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(temporary, path)


@contextlib.contextmanager
def replaced(path: str, suffix: str = TEMP_SUFFIX,
             errors: Tuple[Type[BaseException], ...] = (OSError,)) -> Iterator[str]:
    """Yield a hidden temporary name beside ``path`` (ending in ``suffix``) to write to; when
    the block succeeds, rename it to ``path`` (replacing a file or folder there). On any
    exception it is removed; one of ``errors`` (a refused write) becomes a DataError naming
    ``path``."""
    directory, name = os.path.split(os.path.abspath(path))
    temporary = os.path.join(directory, f".{name}.{os.getpid()}{suffix}")
    try:
        yield temporary
        _put_in_place(temporary, path)
    except errors as e:
        raise DataError(f"cannot write {path} ({_reason(e)}); no partial file was left under "
                        "that name") from None
    finally:
        _remove(temporary)
