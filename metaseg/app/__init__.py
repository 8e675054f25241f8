"""``metaseg app``: a local page to label a few images, adapt, review and correct, download.

workdir.py (the work directory's layout, names, labels) -> gallery.py (sizes, thumbnails,
undecodable files) -> jobs.py (one background job at a time) -> adaptation.py (the job:
``metaseg adapt``'s adaptation, then predictions) -> review.py (what to check first) ->
service.py (what the app does) -> server.py (the HTTP API, Starlette) -> command.py (the
``metaseg app`` subcommand, uvicorn). The page is static/ (HTML, CSS, JS; no build step).
Needs the ``app`` extra: ``pip install 'metaseg[app]'``.
"""
