"""The HTTP API of ``metaseg app`` through Starlette's test client: gallery and undecodable
files, image upload, mask save/reload at the image's own size, bad masks, path traversal,
the adaptation job (lifecycle, two at once, cancel), predictions, downloads, export, and a
server restart on the same work directory."""
import io
import json
import os
import threading
import time
import zipfile

import numpy as np
import pytest

from metaseg.__main__ import main
from metaseg.cli import folders
from metaseg import checkpoints
from tests.app.conftest import BROKEN, SCENES, make_client, png, read_png, scene_mask
from tests.cli.test_metaseg_cli import trainable
from tests.conftest import time_limit

NAMES = sorted(name for name, _, _ in SCENES)


def wait(client, job_id, seconds=300):
    deadline = time.time() + time_limit(seconds)
    while time.time() < deadline:
        job = client.get(f"/api/jobs/{job_id}").json()
        if job["state"] not in ("queued", "running"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} still {job['state']} after {seconds} s x scale")


def label(client, *names):
    for name in names:
        response = client.put(f"/api/masks/{name}", content=png(scene_mask(name)))
        assert response.status_code == 200, response.text


def test_gallery_names_undecodable_files_and_caches_thumbnails(scenes, tmp_path):
    client, _ = make_client(tmp_path / "work", scenes, None)
    assert client.get("/api/images").json() == NAMES  # no broken.jpg, no notes.txt
    overview = client.get("/api/gallery").json()
    assert [p["name"] for p in overview["problems"]] == [BROKEN]
    assert "cannot decode image" in overview["problems"][0]["reason"]
    assert {(i["name"], i["width"], i["height"]) for i in overview["images"]} == set(SCENES)
    assert not any(i["labelled"] or i["predicted"] for i in overview["images"])
    assert "restart the app with --init" in overview["defaults"]["error"]  # labelling works
    thumb = tmp_path / "work" / "app" / "thumbnails" / "c.jpg"
    response = client.get("/api/thumbnails/c.jpg")
    assert response.status_code == 200 and read_png(response.content).shape == (40, 100, 3)
    made = thumb.stat().st_mtime_ns
    client.get("/api/gallery")
    client.get("/api/thumbnails/c.jpg")
    assert thumb.stat().st_mtime_ns == made  # made once
    assert client.get(f"/api/thumbnails/{BROKEN}").status_code == 400
    shown = read_png(client.get("/api/images/a.jpg").content)
    assert shown.shape == (60, 80, 3)
    assert client.get("/").status_code == 200 and "metaseg" in client.get("/").text
    assert client.get("/static/app.js").status_code == 200


def test_mask_saved_and_reloaded_at_the_images_own_size_across_restarts(scenes, tmp_path):
    client, _ = make_client(tmp_path / "work", scenes, None)
    assert client.get("/api/masks/c.jpg").status_code == 404
    mask = scene_mask("c.jpg")
    # an RGBA canvas export, as the page sends: stored as a single-channel 0/255 PNG
    rgba = np.dstack([mask, mask, mask, np.full_like(mask, 255)])
    response = client.put("/api/masks/c.jpg", content=png(rgba))
    assert response.status_code == 200
    assert response.json()["foreground_pixels"] == int((mask > 0).sum())
    np.testing.assert_array_equal(read_png(client.get("/api/masks/c.jpg").content), mask)
    # the labels are a --support folder metaseg adapt reads
    pairs = folders.support_pairs(str(tmp_path / "work" / "support"))
    assert [os.path.basename(p) for p, _ in pairs] == ["c.jpg"]
    client, _ = make_client(tmp_path / "work", scenes, None)  # restart
    overview = client.get("/api/gallery").json()
    assert [i["name"] for i in overview["images"] if i["labelled"]] == ["c.jpg"]
    np.testing.assert_array_equal(read_png(client.get("/api/masks/c.jpg").content), mask)
    assert client.delete("/api/masks/c.jpg").status_code == 200
    assert client.get("/api/masks/c.jpg").status_code == 404
    assert client.delete("/api/masks/c.jpg").status_code == 404
    assert os.listdir(tmp_path / "work" / "support" / "images") == []


@pytest.mark.parametrize("case", ["wrong size", "same aspect, half size", "jpeg", "garbage",
                                  "grey levels", "unknown image", "undecodable image"])
def test_bad_mask_upload_is_refused_in_one_message(case, scenes, tmp_path):
    client, _ = make_client(tmp_path / "work", scenes, None)
    mask = scene_mask("a.jpg")  # 80 x 60
    name, body, status, expected = {
        "wrong size": ("a.jpg", png(np.zeros((64, 64), np.uint8)), 400,
                       "the mask for a.jpg is 64x64 pixels but the image is 80x60"),
        "same aspect, half size": ("a.jpg", png(mask[::2, ::2]), 400, "is 40x30 pixels"),
        "jpeg": ("a.jpg", png(mask, "JPEG"), 400, "is a JPEG file; upload a PNG"),
        "garbage": ("a.jpg", b"not an image", 400, "not an image PNG can decode"),
        "grey levels": ("a.jpg", png((mask // 255).astype(np.uint8)), 400, "is not binary"),
        "unknown image": ("zzz.jpg", png(mask), 404, "no image 'zzz.jpg'"),
        "undecodable image": (BROKEN, png(mask), 400, "cannot decode image"),
    }[case]
    response = client.put(f"/api/masks/{name}", content=body)
    assert response.status_code == status
    error = response.json()["error"]
    assert expected in error and "\n" not in error
    assert os.listdir(tmp_path / "work" / "support" / "masks") == []


@pytest.mark.parametrize("path", [
    "/api/images/..%2F..%2Fsecret.txt", "/api/images/%2E%2E%2Fsecret.txt",
    "/api/thumbnails/..%2Fwork%2Fapp%2Fsettings.json", "/api/masks/..%2F..%2Fsecret.txt",
    "/api/predictions/..%2Fmodel%2Fadaptation.json", "/api/images/%2Fetc%2Fpasswd",
    "/api/images/.hidden.jpg", "/api/images/sub%2Fa.jpg", "/api/images/..",
    "/api/images/a.jpg%00.png", "/api/images/..%5Csecret.txt"])
def test_names_outside_the_images_folder_are_refused(path, scenes, tmp_path):
    (tmp_path / "secret.txt").write_text("TOP SECRET CONTENT")
    (scenes / ".hidden.jpg").write_bytes((scenes / "a.jpg").read_bytes())
    client, _ = make_client(tmp_path / "work", scenes, None)
    for method in ("GET", "PUT", "DELETE"):
        response = client.request(method, path, content=png(scene_mask("a.jpg")))
        assert response.status_code in (400, 404, 405), (method, path, response.status_code)
        assert b"TOP SECRET" not in response.content
    assert os.listdir(tmp_path / "work" / "support" / "masks") == []
    assert sorted(os.listdir(scenes)) == sorted([n for n, _, _ in SCENES] +
                                                [BROKEN, "notes.txt", ".hidden.jpg"])


def test_image_upload(scenes, tmp_path):
    client, _ = make_client(tmp_path / "work", scenes, None)
    body = (scenes / "a.jpg").read_bytes()
    response = client.put("/api/images/new.jpg", content=body)
    assert response.status_code == 201 and response.json()["width"] == 80
    assert "new.jpg" in client.get("/api/images").json()
    assert (scenes / "new.jpg").read_bytes() == body
    for name, content, expected in [("new.png", body, "already in"),
                                    ("bad.jpg", b"junk", "cannot decode image bad.jpg"),
                                    ("notes.doc", body, "plain file name ending in"),
                                    ("..%2Fescape.jpg", body, "refused image name")]:
        response = client.put(f"/api/images/{name}", content=content)
        assert response.status_code == 400 and expected in response.json()["error"], name
    assert not (tmp_path / "escape.jpg").exists() and not (scenes / "bad.jpg").exists()


def test_adapt_requests_refused_before_a_job_starts(scenes, init, tmp_path):
    client, _ = make_client(tmp_path / "work", scenes, None)
    label(client, "a.jpg")
    response = client.post("/api/adapt", json={})
    assert response.status_code == 400 and "--init" in response.json()["error"]
    client, _ = make_client(tmp_path / "work2", scenes, init)
    response = client.post("/api/adapt", json={})
    assert response.status_code == 400 and "no labelled images" in response.json()["error"]
    label(client, "a.jpg")
    for body, expected in [({"steps": -1}, "steps must be >= 0"),
                           ({"steps": "ten"}, "steps must be a number"),
                           ({"steps": 2.5}, "steps must be a number (whole)"),
                           ({"learning_rate": 0}, "learning_rate must be positive"),
                           ({"step": 3}, "unknown field(s) step"),
                           ([3], "must be a JSON object")]:
        response = client.post("/api/adapt", json=body)
        assert response.status_code == 400 and expected in response.json()["error"], body
    response = client.post("/api/adapt", content=b"{steps: 3", headers={
        "Content-Type": "application/json"})
    assert response.status_code == 400 and "not JSON" in response.json()["error"]
    assert client.get("/api/jobs/nonexistent").status_code == 404
    assert not (tmp_path / "work2" / "model").exists()


def test_adapt_job_predictions_download_export_and_the_cli_continuing(scenes, init, tmp_path,
                                                                       capsys):
    work = tmp_path / "work"
    client, service = make_client(work, scenes, init)
    assert client.get("/api/predictions/c.jpg").status_code == 404  # before any adaptation
    assert client.get("/api/export/keras").status_code == 404
    label(client, "a.jpg", "b.png")
    defaults = client.get("/api/gallery").json()["defaults"]
    assert (defaults["steps"], defaults["image_size"]) == (3, 64)  # the init's UHO steps
    response = client.post("/api/adapt", json={"steps": 4, "seed": 1})
    assert response.status_code == 202
    job_id = response.json()["job"]
    second = client.post("/api/adapt", json={"steps": 1})  # while the first is active
    assert second.status_code == 409 and second.json()["job"] == job_id
    assert "still" in second.json()["error"]
    assert client.get("/api/export/keras").status_code == 409
    seen = set()
    deadline = time.time() + time_limit(300)
    while time.time() < deadline:
        job = client.get(f"/api/jobs/{job_id}").json()
        seen.add(job["state"])
        if job["state"] not in ("queued", "running"):
            break
        time.sleep(0.1)
    assert job["state"] == "done", job["error"]
    assert "running" in seen
    assert (job["step"], job["steps"]) == (4, 4) and np.isfinite(job["loss"])
    assert job["result"]["support"] == ["a.jpg", "b.png"]
    assert job["result"]["skipped"][0]["name"] == BROKEN
    assert client.delete(f"/api/jobs/{job_id}").status_code == 409  # already ended
    record = json.loads((work / "model" / "adaptation.json").read_text())
    assert record["steps"] == 4 and record["seed"] == 1 and len(record["support_losses"]) == 4
    assert record["support_losses"][-1] == pytest.approx(job["loss"])
    assert checkpoints.detect(str(work / "model")).kind is checkpoints.Kind.ADAPTED

    for name, w, h in SCENES:
        response = client.get(f"/api/predictions/{name}")
        if name in ("a.jpg", "b.png"):
            assert response.status_code == 404  # labelled: not predicted
            continue
        mask = read_png(response.content)
        assert mask.shape == (h, w) and set(np.unique(mask)) <= {0, 255}
        assert (work / "overlays" / (os.path.splitext(name)[0] + ".png")).exists()
    rows = client.get("/api/review").json()
    assert [r["name"] for r in rows] == sorted(["c.jpg", "d.jpg"], key=lambda n: (
        service.workdir.confidence()[n], n))
    assert all(r["score_kind"] == "mask confidence" and 0 <= r["score"] <= 1 for r in rows)

    archive = zipfile.ZipFile(io.BytesIO(client.get("/api/download/masks").content))
    assert sorted(archive.namelist()) == ["a.png", "b.png", "c.png", "d.png"]
    for name, w, h in SCENES:
        mask = read_png(archive.read(os.path.splitext(name)[0] + ".png"))
        assert mask.shape == (h, w)
        if name in ("a.jpg", "b.png"):
            np.testing.assert_array_equal(mask, scene_mask(name))  # the label, not a guess

    keras_file = client.get("/api/export/keras")
    assert keras_file.status_code == 200
    assert "config.json" in zipfile.ZipFile(io.BytesIO(keras_file.content)).namelist()
    saved = client.get("/api/export/saved_model")
    assert saved.status_code == 200
    assert "saved_model/saved_model.pb" in zipfile.ZipFile(io.BytesIO(saved.content)).namelist()
    assert client.get("/api/export/pdf").status_code == 400
    assert os.listdir(work / "app" / "tmp") == []  # exports cleaned up

    # A restart sees the model and the predictions.
    client, _ = make_client(work, scenes, init)
    overview = client.get("/api/gallery").json()
    assert overview["adaptation"]["steps"] == 4 and not overview["labels_changed"]
    assert client.get("/api/predictions/c.jpg").status_code == 200

    # `metaseg adapt` on the app's support folder gives the same model and masks.
    out = tmp_path / "cli"
    queries = _copy_queries(scenes, tmp_path / "queries", ("c.jpg", "d.jpg"))
    assert main(["adapt", "--init", str(init), "--support", str(work / "support"), "--query",
                 str(queries), "--output", str(out), "--steps", "4", "--seed", "1"]) == 0
    for ours, theirs in zip(trainable(work / "model"), trainable(out / "model"), strict=True):
        np.testing.assert_array_equal(ours, theirs)
    for stem in ("c", "d"):
        np.testing.assert_array_equal(read_png((work / "masks" / f"{stem}.png").read_bytes()),
                                      read_png((out / "masks" / f"{stem}.png").read_bytes()))
    capsys.readouterr()


def _copy_queries(scenes, directory, names):
    directory.mkdir()
    for name in names:
        (directory / name).write_bytes((scenes / name).read_bytes())
    return directory


def test_cancel_keeps_the_previous_state_and_two_requests_at_once(scenes, init, tmp_path):
    work = tmp_path / "work"
    client, _ = make_client(work, scenes, init)
    label(client, "a.jpg")
    responses = []

    def post():
        responses.append(client.post("/api/adapt", json={"steps": 100000}))

    threads = [threading.Thread(target=post) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(r.status_code for r in responses) == [202, 409]
    job_id = next(r.json()["job"] for r in responses if r.status_code == 202)
    deadline = time.time() + time_limit(300)
    while client.get(f"/api/jobs/{job_id}").json()["step"] < 1:
        assert time.time() < deadline, "no step done"
        time.sleep(0.1)
    response = client.delete(f"/api/jobs/{job_id}")
    assert response.status_code == 200 and response.json()["cancel_requested"]
    job = wait(client, job_id, seconds=120)
    assert job["state"] == "cancelled" and job["step"] < 100000
    assert not (work / "model").exists() and not (work / "masks").exists()
    assert client.get("/api/predictions/c.jpg").status_code == 404
    assert client.delete(f"/api/jobs/{job_id}").status_code == 409
    # the next request is accepted once the cancelled one ended; quality scores of older
    # predictions do not outlive them
    (work / "scores.csv").write_text("file,estimated_iou,low,high\nc.jpg,0.9,0.8,1.0\n")
    assert client.get("/api/review").json() == []  # nothing predicted yet
    response = client.post("/api/adapt", json={"steps": 1})
    assert response.status_code == 202
    assert wait(client, response.json()["job"])["state"] == "done"
    assert client.get("/api/predictions/c.jpg").status_code == 200
    assert not (work / "scores.csv").exists()
    assert {r["score_kind"] for r in client.get("/api/review").json()} == {"mask confidence"}
