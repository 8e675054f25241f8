"""What the app does, without HTTP: the gallery, labels, adaptation jobs, downloads, export.

``server.py`` maps each method to a route; every user mistake is a ``MetasegError`` whose
class says the HTTP status (``workdir.Refused`` 400, ``workdir.NotFound`` 404, ``jobs.Busy``
409, ``jobs.Finished`` 409, other ``MetasegError`` 400).
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import threading
import zipfile
from typing import Optional, Tuple

from PIL import Image

from metaseg.app import adaptation, review
from metaseg.app.gallery import Gallery
from metaseg.app.jobs import Busy, Job, JobRunner
from metaseg.app.workdir import NotFound, Refused, WorkDir, decode_mask_upload, stem, \
    write_atomic
from metaseg.cli import folders
from metaseg.errors import DataError, MetasegError

# File (or folder) name of each export format; a folder is sent as a zip.
EXPORT_NAMES = {"keras": "model.keras", "saved_model": "saved_model", "litert": "model.tflite",
                "onnx": "model.onnx"}


class Service:
    """One work directory, its images and the initialisation it adapts."""

    def __init__(self, workdir: WorkDir, init: Optional[str]):
        self.workdir = workdir
        self.gallery = Gallery(workdir)
        self.init = init
        self.model_lock = threading.Lock()  # the model and predictions: commit vs. readers
        self.jobs = JobRunner(self._adapt)
        self._defaults: Optional[dict] = None

    # -- reading -------------------------------------------------------------------------
    def defaults(self) -> dict:
        """The initialisation's adaptation defaults, or {"error": why it cannot adapt}."""
        if self._defaults is None:
            try:
                _, self._defaults = adaptation.open_initialisation(self.init)
            except MetasegError as e:
                return {"init": self.init, "error": " ".join(str(e).split())}
        return self._defaults

    def image_names(self) -> list:
        """The images of the folder that decode (the others are the gallery's problems)."""
        names, _ = self.workdir.listing()
        usable = [n for n in names
                  if not self.gallery.info(n, os.path.join(self.workdir.images, n))["error"]]
        self.gallery.save()
        return usable

    def overview(self) -> dict:
        """Everything the page shows: images with their state, problems, model, job."""
        names, problems = self.workdir.listing()
        labelled = self.workdir.labelled()
        confidence = self.workdir.confidence()
        images = []
        for name in names:
            info = self.gallery.info(name, os.path.join(self.workdir.images, name))
            if info["error"]:
                problems.append({"name": name, "reason": info["error"]})
                continue
            images.append({"name": name, "width": info["width"], "height": info["height"],
                           "labelled": name in labelled,
                           "predicted": os.path.exists(self.workdir.prediction_path(name)),
                           "confidence": confidence.get(name)})
        self.gallery.save()
        record = self.workdir.adaptation()
        active = self.jobs.active()
        return {"images": images, "problems": sorted(problems, key=lambda p: p["name"]),
                "adaptation": _summary(record),
                "labels_changed": record is not None and sorted(record.get("support", []))
                != sorted(labelled),
                "job": active.to_json() if active else None, "defaults": self.defaults(),
                "export_formats": export_formats(), "workdir": self.workdir.root,
                "images_folder": self.workdir.images}

    def review(self) -> list:
        """Unlabelled images with a prediction, the ones to check first first."""
        labelled = self.workdir.labelled()
        names = [n for n in self.image_names() if n not in labelled
                 and os.path.exists(self.workdir.prediction_path(n))]
        return review.order(names, self.workdir.confidence(),
                            self.workdir.path(review.SCORES_FILE))

    def display_image(self, name: str) -> bytes:
        """JPEG of the image upright at its own size (what the painter draws on)."""
        image = folders.decode_image(self.workdir.image_path(name))
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=92)
        return buffer.getvalue()

    def thumbnail(self, name: str) -> str:
        self.gallery.size(name)  # decodes and caches; DataError if it cannot be decoded
        return self.gallery.thumbnail_path(name)

    def mask_file(self, name: str) -> str:
        self.workdir.image_path(name)
        path = self.workdir.label_path(name)
        if name not in self.workdir.labelled():
            raise NotFound(f"image {name!r} has no mask yet")
        return path

    def prediction_file(self, name: str) -> str:
        self.workdir.image_path(name)
        path = self.workdir.prediction_path(name)
        if not os.path.exists(path):
            raise NotFound(f"no predicted mask for {name!r} yet: predictions are made for the "
                           "unlabelled images when an adaptation finishes (POST /api/adapt)")
        return path

    # -- writing -------------------------------------------------------------------------
    def save_mask(self, name: str, body: bytes) -> dict:
        size = self.gallery.size(name)  # also refuses names outside the folder
        mask = decode_mask_upload(body, size, name)
        self.workdir.save_label(name, mask)
        return {"image": name, "labelled": True, "width": size[1], "height": size[0],
                "foreground_pixels": int((mask > 0).sum())}

    def delete_mask(self, name: str) -> dict:
        self.workdir.delete_label(name)
        return {"image": name, "labelled": False}

    def add_image(self, name: str, body: bytes) -> dict:
        path = self.workdir.new_image_path(name)
        scratch = self.workdir.scratch()
        try:
            trial = os.path.join(scratch, name)
            with open(trial, "wb") as f:
                f.write(body)
            image = folders.decode_image(trial)  # refuse what the gallery could not show
        except DataError as e:
            raise DataError(str(e).replace(trial, name)) from None
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        write_atomic(path, body)
        return {"image": name, "width": int(image.shape[1]), "height": int(image.shape[0])}

    # -- adaptation ----------------------------------------------------------------------
    def submit_adaptation(self, body) -> Job:
        request = adaptation.AdaptRequest.from_json(body)
        defaults = self.defaults()
        if "error" in defaults:
            raise MetasegError(defaults["error"])
        if not self.workdir.labelled():
            raise DataError("no labelled images yet: paint or import a mask for at least one "
                            "image, then press Adapt")
        return self.jobs.submit("adapt", {k: v for k, v in vars(request).items()
                                          if v is not None})

    def _adapt(self, job: Job) -> dict:
        request = adaptation.AdaptRequest.from_json(job.params)
        return adaptation.run(self.workdir, self.init, request, job, self.model_lock)

    def job(self, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        if job is None:
            raise NotFound(f"no job {job_id!r} (jobs are forgotten when the server restarts)")
        return job

    # -- downloads -----------------------------------------------------------------------
    def masks_zip(self) -> bytes:
        """Zip of ``<stem>.png`` per image: its label if it has one, else its prediction."""
        buffer = io.BytesIO()
        labelled = self.workdir.labelled()
        with self.model_lock, zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for name in self.image_names():
                path = (self.workdir.label_path(name) if name in labelled
                        else self.workdir.prediction_path(name))
                if os.path.exists(path):
                    archive.write(path, stem(name) + ".png")
        return buffer.getvalue()

    def export(self, fmt: str) -> Tuple[str, str]:
        """(file to send, scratch folder to delete after) of the adapted model in ``fmt``."""
        formats = export_formats()
        if fmt not in formats:
            raise Refused(f"unknown export format {fmt!r}; choose one of {', '.join(formats)}")
        active = self.jobs.active()
        if active is not None:
            raise Busy(active)
        if self.workdir.adaptation() is None:
            raise NotFound("no adapted model yet: press Adapt first")
        from metaseg.cli import export  # pylint: disable=import-outside-toplevel
        scratch = self.workdir.scratch()
        output = os.path.join(scratch, EXPORT_NAMES.get(fmt, f"model.{fmt}"))
        parser = argparse.ArgumentParser()
        export.add_parser(parser.add_subparsers(), [])
        args = parser.parse_args(["export", "--model", self.workdir.model, "--format", fmt,
                                  "--output", output])
        with self.model_lock:
            export.run(args)  # exactly `metaseg export`
        if os.path.isdir(output):
            output = shutil.make_archive(output, "zip", scratch, os.path.basename(output))
        return output, scratch


def export_formats() -> tuple:
    from metaseg.cli import export  # pylint: disable=import-outside-toplevel
    return tuple(export.FORMATS)


def _summary(record: Optional[dict]) -> Optional[dict]:
    if record is None:
        return None
    losses = record.get("support_losses") or []
    keep = ("steps", "learning_rate", "image_size", "seed", "support", "hyperparameters_from",
            "initialisation")
    return {**{k: record.get(k) for k in keep},
            "final_loss": losses[-1] if losses else None}
