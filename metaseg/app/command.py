"""``metaseg app``: label images in the browser, adapt, review and correct, download.

Serves the page and the HTTP API (``metaseg.app.server``) on 127.0.0.1 unless ``--host``
says otherwise. ``--images`` and ``--init`` are stored in the work directory, so
``metaseg app --workdir DIR`` alone continues where the last session stopped; without a
stored ``--init`` the initialisation recorded in ``DIR/model/adaptation.json`` (what
``metaseg adapt --output DIR`` wrote) is used. This module imports neither TensorFlow nor
the web stack until :func:`run`.
"""

from __future__ import annotations

import argparse
import errno
import ipaddress
import os
import socket

from absl import logging

from metaseg.errors import ConfigError, DataError

HELP = "label images in the browser, adapt, review and correct the masks, download them"
DEFAULT_HOST, DEFAULT_PORT, DEFAULT_WORKDIR = "127.0.0.1", 8765, "metaseg_work"


def add_parser(subparsers, parents) -> None:
    p = subparsers.add_parser("app", parents=parents, help=HELP, description=HELP)
    p.add_argument("--init", metavar="NAME_OR_DIR",
                   help="initialisation to adapt (checkpoint folder, metaseg adapt output, TF1 "
                        "checkpoint); default: the one stored in --workdir")
    p.add_argument("--images", metavar="FOLDER",
                   help="the images to label and segment (any size); default: the folder "
                        "stored in --workdir")
    p.add_argument("--workdir", default=DEFAULT_WORKDIR, metavar="DIR",
                   help="labels, adapted model, predictions (the layout of metaseg adapt "
                        f"--output); default ./{DEFAULT_WORKDIR}")
    p.add_argument("--host", default=None,
                   help=f"address to listen on (default {DEFAULT_HOST}, this machine only); "
                        "any other address lets other machines read and change the work "
                        "directory")
    p.add_argument("--port", type=int, default=DEFAULT_PORT,
                   help=f"port (default {DEFAULT_PORT}; 0 picks a free one)")
    p.set_defaults(run=run)


def resolve(workdir: str, images, init):
    """(images folder, initialisation or None) from the flags, else what is stored."""
    from metaseg.app import workdir as wd  # pylint: disable=import-outside-toplevel
    stored = wd.stored_settings(workdir)
    if images is None:
        images = stored.get("images")
    if images is None:
        raise ConfigError(f"--images FOLDER is needed: work directory {workdir} has no images "
                          "folder stored yet (the first `metaseg app` in it must name one)")
    if init is None:
        init = stored.get("init") or (wd.read_json(
            os.path.join(workdir, wd.ADAPTED_SUBDIR, wd.ADAPTATION_FILE), {})
            or {}).get("initialisation")
    if not os.path.isdir(images):
        raise DataError(f"--images folder {os.path.abspath(images)} does not exist or is not a "
                        "folder")
    return os.path.abspath(images), init


def listen(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``; DataError (one line) if it cannot be had."""
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port must be in 0..65535, got {port}")
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET,
                         socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise DataError(f"port {port} on {host} is already in use (another metaseg app?); "
                            "stop that server or pass another --port") from None
        raise DataError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    sock.setblocking(False)
    return sock


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def run(args: argparse.Namespace) -> int:
    try:  # pylint: disable=import-outside-toplevel
        import uvicorn
        from metaseg.app import adaptation, server, service, workdir as wd
    except ImportError as e:
        raise ConfigError(f"metaseg app needs the web stack ({e.name} is missing): "
                          "pip install 'metaseg[app]'") from None
    root = os.path.abspath(args.workdir)
    images, init = resolve(root, args.images, args.init)
    host = args.host or DEFAULT_HOST
    sock = listen(host, args.port)  # first: a port in use is the one line to print
    if init is not None:
        adaptation.open_initialisation(init)  # a bad --init ends here, in one line
    else:
        logging.warning("No --init given or stored: you can label images, but Adapt needs "
                        "an initialisation (restart with --init CHECKPOINT)")
    work = wd.WorkDir(root, images)
    work.prepare()
    wd.store_settings(root, {"images": images, "init": init})
    app = server.create_app(service.Service(work, init))
    port = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    if not _is_loopback(host):
        logging.warning("Listening on %s: anyone who can reach this machine can read and "
                        "change %s", host, root)
    print(f"metaseg app: http://{shown}:{port}/ (work directory {root}, images {images}; "
          "Ctrl+C stops it)", flush=True)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    try:
        uvicorn.Server(config).run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn re-raises Ctrl+C after its clean shutdown
        pass
    print("metaseg app: stopped", flush=True)
    return 0
