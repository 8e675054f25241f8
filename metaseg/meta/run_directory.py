"""The ``--checkpoint`` directory of one run: locked while the run lives, and removed again
if the run fails before writing anything worth keeping.

Two runs writing into one directory would overwrite each other's checkpoints and results,
so a run holds an exclusive ``fcntl.flock`` on ``<directory>/.metaseg.lock`` for as long as
it lives. The kernel drops the lock when the process ends, however it ends (SIGKILL too),
so the lock of a dead run never blocks a resume. Only the chief of a multi-worker run
claims the directory (the other workers write nothing); remote directories (``gs://``) are
not locked.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import socket
import time
from typing import Iterator, Optional

from absl import logging

from metaseg.errors import CheckpointError
from metaseg import checkpoints

LOCK_FILE = ".metaseg.lock"


@contextlib.contextmanager
def claimed(directory: str, chief: bool = True) -> Iterator[None]:
    """Hold ``directory`` (created if missing) for the body; a body that fails leaves no
    directory it created without a checkpoint in it (e.g. only ``config.json``)."""
    if not chief or "://" in directory:  # gs:// and the like: no flock, nothing to clean
        if chief:
            logging.warning("--checkpoint %s is not on a local file system: it cannot be "
                            "locked against a second run writing into it", directory)
        yield
        return
    created = not os.path.exists(directory)
    os.makedirs(directory, exist_ok=True)
    fd = _lock(directory)
    try:
        yield
    except BaseException:
        if created and checkpoints.latest(directory) is None:
            shutil.rmtree(directory, ignore_errors=True)
        raise
    finally:
        _unlock(directory, fd)


def _lock(directory: str) -> Optional[int]:
    path = os.path.join(directory, LOCK_FILE)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise CheckpointError(
                f"--checkpoint directory {directory} is in use by another run ({holder}); "
                "two runs in one directory overwrite each other's checkpoints: wait for it "
                "to finish, or choose another --checkpoint directory") from None
        except OSError as e:  # a file system without flock (some network mounts)
            os.close(fd)
            if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                raise
            logging.warning("cannot lock %s (%s): nothing stops a second run from writing "
                            "into the same --checkpoint directory", path, e.strerror)
            return None
        # Locked; but if the file was removed meanwhile (a finishing run), lock the new one.
        if os.path.exists(path) and os.stat(path).st_ino == os.fstat(fd).st_ino:
            break
        os.close(fd)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"process {os.getpid()} on {socket.gethostname()} since "
                  f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode(), 0)
    return fd


def _unlock(directory: str, fd: Optional[int]) -> None:
    if fd is None:
        return
    with contextlib.suppress(OSError):  # the directory may have been removed above
        os.remove(os.path.join(directory, LOCK_FILE))
    os.close(fd)
