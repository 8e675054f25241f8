"""The HTTP API of ``metaseg app`` (Starlette) and the static page that uses it.

Image names in paths are the plain file names of the images folder (URL-encoded); errors
are JSON ``{"error": "one line"}`` with status 400 (bad input, refused name), 404 (no such
image, mask, prediction, job or model), 409 (an adaptation is queued or running). The
routes are listed in README.md, section "metaseg app".
"""

from __future__ import annotations

import json
import os
import shutil

from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from metaseg.app.jobs import Busy, Finished
from metaseg.app.service import Service
from metaseg.app.workdir import NotFound, Refused
from metaseg.errors import MetasegError

STATIC = os.path.join(os.path.dirname(__file__), "static")
MAX_BODY_BYTES = 200 * 1024 * 1024
NO_STORE = {"Cache-Control": "no-store"}


def _status(error: MetasegError) -> int:
    if isinstance(error, NotFound):
        return 404
    if isinstance(error, (Busy, Finished)):
        return 409
    return 400  # Refused, DataError, ConfigError, CheckpointError


async def _metaseg_error(request: Request, error: MetasegError) -> JSONResponse:
    body = {"error": " ".join(str(error).split())}
    if isinstance(error, Busy):
        body["job"] = error.job.id
    return JSONResponse(body, status_code=_status(error))


async def _json_body(request: Request):
    raw = await request.body()
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except ValueError as e:
        raise Refused(f"the request body is not JSON: {e}") from None


def create_app(service: Service) -> Starlette:
    """The ASGI app serving ``service`` (see the README for the routes)."""

    def name(request: Request) -> str:
        return request.path_params["image"]

    async def index(request):
        return FileResponse(os.path.join(STATIC, "index.html"), headers=NO_STORE)

    async def list_images(request):
        return JSONResponse(await run_in_threadpool(service.image_names))

    async def overview(request):
        return JSONResponse(await run_in_threadpool(service.overview))

    async def get_image(request):
        data = await run_in_threadpool(service.display_image, name(request))
        return Response(data, media_type="image/jpeg")

    async def put_image(request):
        body = await request.body()
        return JSONResponse(await run_in_threadpool(service.add_image, name(request), body),
                            status_code=201)

    async def thumbnail(request):
        path = await run_in_threadpool(service.thumbnail, name(request))
        return FileResponse(path, media_type="image/jpeg", headers={"Cache-Control": "no-cache"})

    async def get_mask(request):
        path = await run_in_threadpool(service.mask_file, name(request))
        return FileResponse(path, media_type="image/png", headers=NO_STORE)

    async def put_mask(request):
        body = await request.body()
        return JSONResponse(await run_in_threadpool(service.save_mask, name(request), body))

    async def delete_mask(request):
        return JSONResponse(await run_in_threadpool(service.delete_mask, name(request)))

    async def prediction(request):
        path = await run_in_threadpool(service.prediction_file, name(request))
        return FileResponse(path, media_type="image/png", headers=NO_STORE)

    async def review(request):
        return JSONResponse(await run_in_threadpool(service.review))

    async def adapt(request):
        job = await run_in_threadpool(service.submit_adaptation, await _json_body(request))
        return JSONResponse({"job": job.id}, status_code=202)

    async def get_job(request):
        return JSONResponse(service.job(request.path_params["job"]).to_json(), headers=NO_STORE)

    async def cancel_job(request):
        job = service.job(request.path_params["job"])
        service.jobs.cancel(job)
        return JSONResponse({**job.to_json(), "cancel_requested": True})

    async def download_masks(request):
        data = await run_in_threadpool(service.masks_zip)
        return Response(data, media_type="application/zip",
                        headers={"Content-Disposition": 'attachment; filename="masks.zip"'})

    async def export(request):
        path, scratch = await run_in_threadpool(service.export, request.path_params["format"])
        return FileResponse(path, filename=os.path.basename(path),
                            background=BackgroundTask(shutil.rmtree, scratch, True))

    routes = [
        Route("/", index),
        Route("/api/images", list_images),
        Route("/api/gallery", overview),
        Route("/api/images/{image:path}", get_image),
        Route("/api/images/{image:path}", put_image, methods=["PUT"]),
        Route("/api/thumbnails/{image:path}", thumbnail),
        Route("/api/masks/{image:path}", get_mask),
        Route("/api/masks/{image:path}", put_mask, methods=["PUT"]),
        Route("/api/masks/{image:path}", delete_mask, methods=["DELETE"]),
        Route("/api/predictions/{image:path}", prediction),
        Route("/api/review", review),
        Route("/api/adapt", adapt, methods=["POST"]),
        Route("/api/jobs/{job}", get_job),
        Route("/api/jobs/{job}", cancel_job, methods=["DELETE"]),
        Route("/api/download/masks", download_masks),
        Route("/api/export/{format}", export),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    return Starlette(routes=routes, exception_handlers={MetasegError: _metaseg_error},
                     max_body_size=MAX_BODY_BYTES)
