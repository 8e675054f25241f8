// metaseg app: gallery, painter, adaptation progress, review. Everything goes through the
// HTTP API of metaseg/app/server.py (documented in README.md, "metaseg app").
"use strict";

const $ = (id) => document.getElementById(id);
const enc = encodeURIComponent;
const FOREGROUND = [255, 48, 48];  // the overlay colour (as metaseg's overlays/)
const UNDO_DEPTH = 30;

const app = {
  overview: null, view: "gallery", from: "gallery", list: [], index: -1, job: null, timer: null,
};
const painter = {
  name: null, w: 0, h: 0, mask: null, image: null, undo: [], tool: "brush", dirty: false,
  scale: 1, drawing: false, last: null, hover: null, layer: null, layerData: null,
  opacity: 0.5, shown: true, box: null, frame: 0,
};

// -- HTTP --------------------------------------------------------------------------------
async function api(method, url, body, type) {
  const options = { method, headers: {} };
  if (body !== undefined) {
    options.body = body;
    if (type) options.headers["Content-Type"] = type;
  }
  const response = await fetch(url, options);
  if (!response.ok) {
    let text = `${response.status} ${response.statusText}`;
    try { text = (await response.json()).error || text; } catch (e) { /* not JSON */ }
    const error = new Error(text);
    error.status = response.status;
    throw error;
  }
  return response;
}
const getJSON = async (url) => (await api("GET", url)).json();

async function fetchBitmap(url) {
  // null when the server says 404 (no mask / no prediction yet)
  const response = await fetch(url, { cache: "no-store" });
  if (response.status === 404) return null;
  if (!response.ok) throw new Error(`${url}: ${response.status}`);
  return createImageBitmap(await response.blob(),
                           { colorSpaceConversion: "none", premultiplyAlpha: "none" });
}

function say(text, isError) {
  const box = $("message");
  box.textContent = text || "";
  box.className = isError ? "error" : "";
}

// -- views -------------------------------------------------------------------------------
async function show(view) {
  if (view !== "paint" && app.view === "paint" && !(await leavePainter())) return;
  app.view = view;
  for (const name of ["gallery", "review", "paint"]) $(`view-${name}`).hidden = name !== view;
  for (const tab of document.querySelectorAll(".tab")) {
    tab.classList.toggle("active", tab.dataset.view === view);
  }
  if (view === "gallery") await refresh();
  if (view === "review") await renderReview();
}

async function refresh() {
  const overview = await getJSON("/api/gallery");
  app.overview = overview;
  renderGallery(overview);
  renderSettings(overview);
  if (overview.job && !app.timer) follow(overview.job.job);
  return overview;
}

function badge(text, kind) {
  const span = document.createElement("span");
  span.className = `badge ${kind}`;
  span.textContent = text;
  return span;
}

function card(name, picture, labels) {
  const div = document.createElement("div");
  div.className = "card";
  div.dataset.name = name;
  const caption = document.createElement("div");
  caption.className = "name";
  caption.textContent = name;
  caption.title = name;
  div.append(picture, caption, ...labels);
  return div;
}

function renderGallery(overview) {
  const grid = $("gallery-grid");
  grid.replaceChildren();
  const names = overview.images.map((image) => image.name);
  for (const image of overview.images) {
    const thumb = new Image();
    thumb.src = `/api/thumbnails/${enc(image.name)}`;
    thumb.alt = image.name;
    const labels = [badge(`${image.width}×${image.height}`, "")];
    if (image.labelled) labels.push(badge("labelled", "labelled"));
    else if (image.predicted) labels.push(badge("predicted", "predicted"));
    const div = card(image.name, thumb, labels);
    div.dataset.labelled = image.labelled ? "1" : "0";
    div.dataset.predicted = image.predicted ? "1" : "0";
    div.onclick = () => openPainter(image.name, names);
    grid.append(div);
  }
  const labelled = overview.images.filter((image) => image.labelled).length;
  const predicted = overview.images.filter((image) => !image.labelled && image.predicted).length;
  let text = `${overview.images.length} images in ${overview.images_folder}: ${labelled} ` +
    `labelled, ${predicted} predicted.`;
  const adaptation = overview.adaptation;
  if (adaptation) {
    text += ` Model: ${adaptation.steps} steps at ${adaptation.learning_rate} on ` +
      `${adaptation.support.length} labelled images` +
      (adaptation.final_loss === null ? "." : `, final loss ${adaptation.final_loss.toFixed(4)}.`);
    if (overview.labels_changed) text += " Labels changed since: press Adapt again.";
  } else {
    text += labelled ? " Press Adapt to segment the others." :
      " Click an image and paint the object to label it.";
  }
  $("summary").textContent = text;
  const problems = $("problems");
  problems.hidden = overview.problems.length === 0;
  problems.replaceChildren();
  if (overview.problems.length) {
    const title = document.createElement("strong");
    title.textContent = `${overview.problems.length} file(s) cannot be used:`;
    const list = document.createElement("ul");
    for (const problem of overview.problems) {
      const item = document.createElement("li");
      item.textContent = `${problem.name}: ${problem.reason}`;
      item.dataset.name = problem.name;
      list.append(item);
    }
    problems.append(title, list);
  }
}

function renderSettings(overview) {
  const defaults = overview.defaults || {};
  if (defaults.error) {
    $("adapt").disabled = true;
    $("adapt").title = defaults.error;
  } else {
    $("steps").placeholder = `${defaults.steps}`;
    $("learning-rate").placeholder = `${defaults.learning_rate}`;
    $("adapt").title = `defaults ${defaults.hyperparameters_from}`;
  }
  const select = $("export-format");
  if (select.options.length !== overview.export_formats.length) {
    select.replaceChildren(...overview.export_formats.map((format) => new Option(format, format)));
  }
  $("export").disabled = !overview.adaptation;
}

async function renderReview() {
  const rows = await getJSON("/api/review");
  const grid = $("review-grid");
  grid.replaceChildren();
  $("review-help").textContent = rows.length ?
    `${rows.length} predicted masks, the ones to check first first (by ${rows[0].score_kind}). ` +
    "Click one to correct it: a saved correction joins the support set." :
    "No predictions yet: label a few images and press Adapt.";
  const names = rows.map((row) => row.name);
  for (const row of rows) {
    const canvas = document.createElement("canvas");
    const score = row.score === null ? "no score" : `${row.score_kind} ${row.score.toFixed(3)}`;
    const area = badge("", "");
    const div = card(row.name, canvas, [badge(score, "predicted"), area]);
    div.onclick = () => openPainter(row.name, names);
    grid.append(div);
    drawOverlayCard(canvas, row.name, area).catch((error) => say(error.message, true));
  }
}

async function drawOverlayCard(canvas, name, area) {
  const [thumb, prediction] = await Promise.all([
    fetchBitmap(`/api/thumbnails/${enc(name)}`), fetchBitmap(`/api/predictions/${enc(name)}`)]);
  canvas.width = thumb.width;
  canvas.height = thumb.height;
  const context = canvas.getContext("2d");
  context.drawImage(thumb, 0, 0);
  if (prediction) {
    const [layer, fraction] = tinted(prediction, thumb.width, thumb.height);
    context.globalAlpha = 0.5;
    context.drawImage(layer, 0, 0);
    area.textContent = `${(100 * fraction).toFixed(fraction > 0 && fraction < 0.01 ? 1 : 0)} % foreground`;
    canvas.dataset.overlay = "loaded";
  }
}

function tinted(bitmap, w, h) {
  // [a w x h canvas: FOREGROUND where the mask bitmap is >= 128, transparent elsewhere,
  //  the fraction of foreground pixels]
  const layer = document.createElement("canvas");
  layer.width = w;
  layer.height = h;
  const context = layer.getContext("2d");
  context.imageSmoothingEnabled = false;
  context.drawImage(bitmap, 0, 0, w, h);
  const data = context.getImageData(0, 0, w, h);
  let count = 0;
  for (let i = 0; i < data.data.length; i += 4) {
    const on = data.data[i] >= 128;
    count += on;
    data.data.set(on ? [...FOREGROUND, 255] : [0, 0, 0, 0], i);
  }
  context.putImageData(data, 0, 0);
  return [layer, count / (w * h)];
}

// -- painter -----------------------------------------------------------------------------
async function openPainter(name, list) {
  if (app.view === "paint" && !(await leavePainter())) return;
  if (app.view !== "paint") app.from = app.view;
  app.list = list;
  app.index = list.indexOf(name);
  app.view = "paint";
  for (const view of ["gallery", "review", "paint"]) $(`view-${view}`).hidden = view !== "paint";
  $("paint-name").textContent = `${name} (${app.index + 1}/${list.length})`;
  $("paint-status").textContent = "loading…";
  try {
    const image = await fetchBitmap(`/api/images/${enc(name)}`);
    painter.name = name;
    painter.image = image;
    painter.w = image.width;
    painter.h = image.height;
    painter.undo = [];
    painter.dirty = false;
    await loadMask();
    layout();
  } catch (error) {
    say(error.message, true);
  }
}

async function loadMask() {
  // the saved label, else the prediction (to correct), else nothing
  const { w, h, name } = painter;
  painter.mask = new Uint8Array(w * h);
  let source = "no mask yet: paint the object";
  let bitmap = await fetchBitmap(`/api/masks/${enc(name)}`);
  if (bitmap) source = "your label";
  else {
    bitmap = await fetchBitmap(`/api/predictions/${enc(name)}`);
    if (bitmap) source = "predicted mask: correct it and save to add it to the support set";
  }
  if (bitmap) {
    const canvas = document.createElement("canvas");
    canvas.width = w;
    canvas.height = h;
    const context = canvas.getContext("2d");
    context.imageSmoothingEnabled = false;
    context.drawImage(bitmap, 0, 0, w, h);
    const data = context.getImageData(0, 0, w, h).data;
    for (let i = 0; i < w * h; i++) painter.mask[i] = data[4 * i] >= 128 ? 1 : 0;
  }
  painter.source = source;
  $("paint-status").textContent = `${w}×${h} · ${source}`;
  $("paint").dataset.source = bitmap ? (source === "your label" ? "label" : "prediction") : "none";
}

function layout() {
  const { w, h } = painter;
  const wrap = $("canvas-wrap");
  const maxW = Math.max(200, wrap.clientWidth - 16);
  const maxH = Math.max(200, window.innerHeight - wrap.getBoundingClientRect().top - 90);
  painter.scale = Math.min(maxW / w, maxH / h, 12);
  const canvas = $("paint");
  canvas.width = Math.round(w * painter.scale);
  canvas.height = Math.round(h * painter.scale);
  painter.layer = document.createElement("canvas");
  painter.layer.width = w;
  painter.layer.height = h;
  painter.layerData = painter.layer.getContext("2d").createImageData(w, h);
  painter.box = [0, 0, w - 1, h - 1];
  render();
}

function render() {
  painter.frame = 0;
  const { w, h } = painter;
  if (painter.box) {  // copy the changed part of the mask into the coloured layer
    const [x0, y0, x1, y1] = painter.box;
    const pixels = painter.layerData.data;
    for (let y = y0; y <= y1; y++) {
      for (let x = x0; x <= x1; x++) {
        const i = y * w + x;
        const on = painter.mask[i] === 1;
        pixels[4 * i] = FOREGROUND[0];
        pixels[4 * i + 1] = FOREGROUND[1];
        pixels[4 * i + 2] = FOREGROUND[2];
        pixels[4 * i + 3] = on ? 255 : 0;
      }
    }
    painter.layer.getContext("2d").putImageData(painter.layerData, 0, 0, x0, y0,
                                                x1 - x0 + 1, y1 - y0 + 1);
    painter.box = null;
  }
  const canvas = $("paint");
  const context = canvas.getContext("2d");
  context.globalAlpha = 1;
  context.imageSmoothingEnabled = true;
  context.drawImage(painter.image, 0, 0, canvas.width, canvas.height);
  if (painter.shown) {
    context.globalAlpha = painter.opacity;
    context.imageSmoothingEnabled = false;
    context.drawImage(painter.layer, 0, 0, canvas.width, canvas.height);
  }
  if (painter.hover) {
    context.globalAlpha = 1;
    context.strokeStyle = painter.tool === "brush" ? "#ffffff" : "#ffd43b";
    context.beginPath();
    context.arc(painter.hover[0] * painter.scale, painter.hover[1] * painter.scale,
                brushSize() / 2, 0, 2 * Math.PI);
    context.stroke();
  }
  canvas.dataset.foreground = String(painter.mask.reduce((a, b) => a + b, 0));
}

function schedule() {
  if (!painter.frame) painter.frame = requestAnimationFrame(render);
}

const brushSize = () => Number($("brush-size").value);

function grow(x0, y0, x1, y1) {
  const b = painter.box;
  painter.box = b ? [Math.min(b[0], x0), Math.min(b[1], y0), Math.max(b[2], x1),
    Math.max(b[3], y1)] : [x0, y0, x1, y1];
}

function stamp(cx, cy) {
  // a disc of the brush's size (screen pixels) in image pixels, hard-edged: masks stay 0/1
  const { w, h, mask } = painter;
  const r = Math.max(0.5, brushSize() / 2 / painter.scale);
  const value = painter.tool === "brush" ? 1 : 0;
  const x0 = Math.max(0, Math.floor(cx - r)), x1 = Math.min(w - 1, Math.ceil(cx + r));
  const y0 = Math.max(0, Math.floor(cy - r)), y1 = Math.min(h - 1, Math.ceil(cy + r));
  if (x0 > x1 || y0 > y1) return;
  for (let y = y0; y <= y1; y++) {
    for (let x = x0; x <= x1; x++) {
      const dx = x + 0.5 - cx, dy = y + 0.5 - cy;
      if (dx * dx + dy * dy <= r * r) mask[y * w + x] = value;
    }
  }
  grow(x0, y0, x1, y1);
}

function strokeTo(point) {
  const [x0, y0] = painter.last;
  const r = Math.max(0.5, brushSize() / 2 / painter.scale);
  const n = Math.max(1, Math.ceil(Math.hypot(point[0] - x0, point[1] - y0) / Math.max(0.5, r / 2)));
  for (let i = 1; i <= n; i++) {
    stamp(x0 + (point[0] - x0) * i / n, y0 + (point[1] - y0) * i / n);
  }
  painter.last = point;
}

function toImage(event) {
  const rect = $("paint").getBoundingClientRect();
  return [(event.clientX - rect.left) * painter.w / rect.width,
    (event.clientY - rect.top) * painter.h / rect.height];
}

function pushUndo() {
  painter.undo.push(painter.mask.slice());
  if (painter.undo.length > UNDO_DEPTH) painter.undo.shift();
}

function undo() {
  if (!painter.undo.length) return;
  painter.mask = painter.undo.pop();
  painter.dirty = true;
  painter.box = [0, 0, painter.w - 1, painter.h - 1];
  schedule();
}

function setTool(tool) {
  painter.tool = tool;
  $("tool-brush").classList.toggle("active", tool === "brush");
  $("tool-eraser").classList.toggle("active", tool === "eraser");
  schedule();
}

function setSize(value) {
  const slider = $("brush-size");
  slider.value = Math.max(Number(slider.min), Math.min(Number(slider.max), value));
  $("brush-size-value").textContent = slider.value;
  schedule();
}

async function maskBlob() {
  // the mask as a PNG at the image's own size, 0 = background, 255 = foreground
  const { w, h, mask } = painter;
  const canvas = document.createElement("canvas");
  canvas.width = w;
  canvas.height = h;
  const context = canvas.getContext("2d");
  const data = context.createImageData(w, h);
  for (let i = 0; i < w * h; i++) {
    const v = mask[i] ? 255 : 0;
    data.data[4 * i] = data.data[4 * i + 1] = data.data[4 * i + 2] = v;
    data.data[4 * i + 3] = 255;
  }
  context.putImageData(data, 0, 0);
  return new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
}

async function save() {
  if (!painter.name) return false;
  try {
    await api("PUT", `/api/masks/${enc(painter.name)}`, await maskBlob(), "image/png");
  } catch (error) {
    say(`${painter.name}: ${error.message}`, true);
    return false;
  }
  painter.dirty = false;
  painter.source = "your label";
  $("paint").dataset.source = "label";
  $("paint-status").textContent = `${painter.w}×${painter.h} · saved: ${painter.name} is labelled`;
  say(`Saved the mask of ${painter.name}.`);
  return true;
}

async function leavePainter() {
  return painter.dirty ? save() : true;
}

async function step(delta) {
  const index = app.index + delta;
  if (index >= 0 && index < app.list.length) await openPainter(app.list[index], app.list);
}

async function importMask(file) {
  try {
    await api("PUT", `/api/masks/${enc(painter.name)}`, file, "image/png");
    say(`Imported ${file.name} as the mask of ${painter.name}.`);
    painter.undo = [];
    painter.dirty = false;
    await loadMask();
    painter.box = [0, 0, painter.w - 1, painter.h - 1];
    render();
  } catch (error) {
    say(`${file.name}: ${error.message}`, true);
  }
}

async function deleteLabel() {
  try {
    await api("DELETE", `/api/masks/${enc(painter.name)}`);
  } catch (error) {
    say(error.message, true);
    return;
  }
  say(`${painter.name} is no longer labelled.`);
  painter.dirty = false;
  await loadMask();
  painter.box = [0, 0, painter.w - 1, painter.h - 1];
  render();
}

function bindPainter() {
  const canvas = $("paint");
  canvas.addEventListener("pointerdown", (event) => {
    if (event.button !== 0 || !painter.mask) return;
    canvas.setPointerCapture(event.pointerId);
    pushUndo();
    painter.drawing = true;
    painter.dirty = true;
    $("paint-status").textContent = `${painter.w}×${painter.h} · unsaved changes (S saves)`;
    painter.last = toImage(event);
    stamp(...painter.last);
    schedule();
  });
  canvas.addEventListener("pointermove", (event) => {
    if (!painter.mask) return;
    painter.hover = toImage(event);
    if (painter.drawing) strokeTo(painter.hover);
    schedule();
  });
  const stop = () => { painter.drawing = false; };
  canvas.addEventListener("pointerup", stop);
  canvas.addEventListener("pointercancel", stop);
  canvas.addEventListener("pointerleave", () => { painter.hover = null; schedule(); });
  $("tool-brush").onclick = () => setTool("brush");
  $("tool-eraser").onclick = () => setTool("eraser");
  $("brush-size").oninput = (event) => setSize(Number(event.target.value));
  $("opacity").oninput = (event) => {
    painter.opacity = Number(event.target.value) / 100;
    painter.shown = true;
    schedule();
  };
  $("undo").onclick = undo;
  $("clear").onclick = () => {
    pushUndo();
    painter.mask.fill(0);
    painter.dirty = true;
    painter.box = [0, 0, painter.w - 1, painter.h - 1];
    schedule();
  };
  $("save").onclick = save;
  $("back").onclick = () => show(app.from || "gallery");
  $("prev").onclick = () => step(-1);
  $("next").onclick = () => step(1);
  $("import-mask").onchange = (event) => {
    if (event.target.files.length) importMask(event.target.files[0]);
    event.target.value = "";
  };
  $("delete-mask").onclick = deleteLabel;
  window.addEventListener("resize", () => { if (app.view === "paint" && painter.mask) layout(); });
}

function onKey(event) {
  if (event.target.tagName === "INPUT" && event.target.type !== "range") return;
  const key = event.key.toLowerCase();
  if (app.view !== "paint") {
    if (key === "g") show("gallery");
    if (key === "r") show("review");
    return;
  }
  const actions = {
    b: () => setTool("brush"), e: () => setTool("eraser"), z: undo, s: save,
    "[": () => setSize(brushSize() - 4), "]": () => setSize(brushSize() + 4),
    o: () => { painter.shown = !painter.shown; schedule(); },
    arrowleft: () => step(-1), arrowright: () => step(1), p: () => step(-1), n: () => step(1),
    escape: () => $("back").onclick(),
  };
  if (actions[key]) {
    event.preventDefault();
    actions[key]();
  }
}

// -- adaptation --------------------------------------------------------------------------
async function adapt() {
  const body = {};
  if ($("steps").value !== "") body.steps = Number($("steps").value);
  if ($("learning-rate").value !== "") body.learning_rate = Number($("learning-rate").value);
  if (app.view === "paint" && !(await leavePainter())) return;
  try {
    const response = await api("POST", "/api/adapt", JSON.stringify(body), "application/json");
    follow((await response.json()).job);
    say("Adapting…");
  } catch (error) {
    say(error.message, true);
  }
}

function follow(id) {
  app.job = id;
  $("adapt").disabled = true;
  $("cancel").hidden = false;
  poll();
}

function progress(job) {
  const bar = $("progress-bar");
  const box = $("progress");
  box.dataset.state = job.state;
  box.dataset.phase = job.phase;
  let fraction = 0;
  let text = job.phase;
  if (job.phase === "adapting") {
    fraction = job.steps ? job.step / job.steps : 1;
    text = `step ${job.step}/${job.steps}`;
    if (job.loss !== null) text += ` · loss ${job.loss.toFixed(4)}`;
    if (job.eta_seconds !== null) text += ` · ETA ${Math.ceil(job.eta_seconds)} s`;
  } else if (job.phase === "predicting") {
    fraction = job.to_predict ? job.predicted / job.to_predict : 1;
    text = `predicting ${job.predicted}/${job.to_predict} images`;
  } else if (job.state === "done") {
    fraction = 1;
    const loss = job.result.final_loss;
    text = `done: ${job.result.steps} steps` + (loss === null ? "" : `, loss ${loss.toFixed(4)}`);
  } else if (job.state === "failed" || job.state === "cancelled") {
    fraction = 1;
    text = job.state;
  } else if (job.phase === "loading") {
    text = "loading the initialisation…";
  }
  bar.style.width = `${Math.round(100 * fraction)}%`;
  $("progress-text").textContent = text;
}

async function poll() {
  app.timer = null;
  let job;
  try {
    job = await getJSON(`/api/jobs/${app.job}`);
  } catch (error) {
    say(error.message, true);
    finish();
    return;
  }
  progress(job);
  if (job.state === "queued" || job.state === "running") {
    app.timer = setTimeout(poll, 400);
    return;
  }
  finish();
  if (job.state === "done") {
    const skipped = job.result.skipped || [];
    say(`Adapted on ${job.result.support.length} labelled images; the others are predicted.` +
        (skipped.length ? ` Not predicted: ${skipped.map((s) => s.name).join(", ")}.` : ""));
  } else if (job.state === "failed") {
    say(`Adaptation failed: ${job.error}`, true);
  } else {
    say("Adaptation cancelled; the previous model and predictions are kept.");
  }
  await refresh();
  if (app.view === "review") await renderReview();
}

function finish() {
  $("adapt").disabled = !!(app.overview && app.overview.defaults.error);
  $("cancel").hidden = true;
}

async function cancel() {
  try {
    await api("DELETE", `/api/jobs/${app.job}`);
  } catch (error) {
    say(error.message, true);
  }
}

// -- downloads and uploads ---------------------------------------------------------------
async function exportModel() {
  const format = $("export-format").value;
  say(`Exporting the adapted model as ${format}…`);
  try {
    const response = await api("GET", `/api/export/${enc(format)}`);
    const match = /filename="?([^";]+)"?/.exec(response.headers.get("Content-Disposition") || "");
    const link = document.createElement("a");
    link.href = URL.createObjectURL(await response.blob());
    link.download = match ? match[1] : `model-${format}`;
    document.body.append(link);
    link.click();
    link.remove();
    say(`Exported ${link.download}.`);
  } catch (error) {
    say(error.message, true);
  }
}

async function addImages(files) {
  const failed = [];
  for (const file of files) {
    try {
      await api("PUT", `/api/images/${enc(file.name)}`, file, file.type || "application/octet-stream");
    } catch (error) {
      failed.push(`${file.name}: ${error.message}`);
    }
  }
  say(failed.length ? failed.join("; ") : `Added ${files.length} image(s).`, failed.length > 0);
  await refresh();
}

function bind() {
  for (const tab of document.querySelectorAll(".tab")) tab.onclick = () => show(tab.dataset.view);
  $("adapt").onclick = adapt;
  $("cancel").onclick = cancel;
  $("export").onclick = exportModel;
  $("add-images").onchange = (event) => {
    addImages([...event.target.files]);
    event.target.value = "";
  };
  document.addEventListener("keydown", onKey);
  bindPainter();
}

bind();
refresh().catch((error) => say(error.message, true));
