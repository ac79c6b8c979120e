// oncopipe serve: the page. Plain DOM, no framework, no network beyond this server.
// Text from the server (file names, reasons) is always set as text, never parsed as HTML.
"use strict";

const state = { datasets: [], current: null, held: null, viewer: null };

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

async function getJSON(url, options) {
  const response = await fetch(url, options);
  let body = null;
  try { body = await response.json(); } catch (e) { body = null; }
  if (!response.ok) {
    throw new Error((body && body.error) || `${response.status} ${response.statusText}`);
  }
  return body;
}

// as oncopipe.predict.percent: a model is never certain, so never 100.0% or 0.0%
const pct = (p) => (p >= 0.9995 ? ">99.9%" : p < 0.0005 ? "<0.1%" : `${(100 * p).toFixed(1)}%`);

// Styles are set through the CSSOM: the Content-Security-Policy forbids inline style attributes.
function widthOf(node, fraction) {
  node.style.width = `${(100 * fraction).toFixed(1)}%`;
  return node;
}

function topAnswer(result) {
  const [name, p] = Object.entries(result.probabilities).sort((a, b) => b[1] - a[1])[0];
  return `${pct(p)} ${name}`;
}

// ---------------------------------------------------------------------------------------------
// Datasets
// ---------------------------------------------------------------------------------------------

async function start() {
  try {
    state.datasets = await getJSON("/api/datasets");
  } catch (e) {
    document.getElementById("predict-body").replaceChildren(
      el("p", { class: "error", text: `cannot reach the server: ${e.message}` }));
    return;
  }
  const nav = document.getElementById("datasets");
  for (const ds of state.datasets) {
    nav.append(el("button", {
      type: "button", role: "tab", id: `tab-${ds.name}`, "aria-selected": "false",
      onclick: () => select(ds.name),
    }, el("span", { class: ds.model ? "dot ready" : "dot", title: ds.model ? "model trained" : "no model yet" }),
    ds.name));
  }
  const fromHash = location.hash.slice(1);
  const first = state.datasets.find((d) => d.name === fromHash)
    || state.datasets.find((d) => d.model) || state.datasets[0];
  select(first.name);
}

function select(name) {
  state.current = state.datasets.find((d) => d.name === name);
  for (const button of document.querySelectorAll("nav button")) {
    button.setAttribute("aria-selected", String(button.id === `tab-${name}`));
  }
  history.replaceState(null, "", `#${name}`);
  renderPredict(state.current);
  renderPipeline(name);
}

// ---------------------------------------------------------------------------------------------
// Predict: one upload (kept under a token), the viewer, the point, the answer
// ---------------------------------------------------------------------------------------------

// XHR, not fetch: it reports upload and download progress
function request(method, url, { body = null, binary = false, onUpload = null, onDownload = null } = {}) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open(method, url);
    xhr.responseType = binary ? "arraybuffer" : "json";
    if (onUpload) xhr.upload.addEventListener("progress", (e) => onUpload(e.loaded, e.lengthComputable ? e.total : 0));
    if (onDownload) xhr.addEventListener("progress", (e) => onDownload(e.loaded, e.lengthComputable ? e.total : 0));
    xhr.addEventListener("load", () => {
      if (xhr.status >= 200 && xhr.status < 300) { resolve(xhr.response); return; }
      const error = !binary && xhr.response && xhr.response.error;
      reject(new Error(error || `${xhr.status} ${xhr.statusText}`));
    });
    xhr.addEventListener("error", () => reject(new Error("the server could not be reached")));
    xhr.send(body);
  });
}

function progress(what, loaded, total) {
  const bar = document.getElementById("progress");
  if (!bar) return;
  bar.hidden = false;
  if (total) { bar.max = total; bar.value = loaded; } else { bar.removeAttribute("value"); }
  const mb = (n) => (n / 1048576).toFixed(1);
  setStatus(total ? `${what}: ${mb(loaded)} of ${mb(total)} MB (${Math.round((100 * loaded) / total)}%)` : `${what}…`);
}

function hideProgress() {
  const bar = document.getElementById("progress");
  if (bar) bar.hidden = true;
}

function forget() {
  const held = state.held;
  state.held = null;
  state.viewer = null;
  state.view = null;
  if (held) fetch(`/api/upload/${held.dataset}/${held.token}`, { method: "DELETE", keepalive: true }).catch(() => {});
}

function renderPredict(ds) {
  forget();
  const body = document.getElementById("predict-body");
  if (!ds.model) {
    body.replaceChildren(el("p", { class: "missing", id: "no-model",
      text: `No model trained yet for ${ds.name}: run \`dvc repro train@${ds.name}\`, then reload.` }));
    return;
  }
  const m = ds.model;
  const fileInput = el("input", { type: "file", id: "file", name: "file", accept: ds.accept.join(","),
    onchange: () => { const f = fileInput.files[0]; if (f) uploadFile(ds, f); } });
  const classes = el("dl", { class: "classes", id: "classes" },
    ...m.class_names.flatMap((c) => [el("dt", { text: c.replaceAll("_", " ") }), el("dd", { text: (ds.classes || {})[c] || "" })]));
  const children = [
    el("p", { class: "note", text: `Model: ${m.model} (task ${m.task}). Input: ${ds.expected}` +
      `${ds.kind === "series" ? " (upload the folder as a .zip)" : ""}.` }),
    el("details", {}, el("summary", { text: "What the answers mean" }), classes),
    el("div", { class: "row", id: "examples" }),
    el("div", { class: "row" }, el("label", { for: "file" }, "Your input "), fileInput),
    el("progress", { id: "progress", hidden: true, "aria-label": "progress" }),
  ];
  if (ds.point) {
    children.push(
      el("fieldset", { class: "row point" },
        el("legend", { text: "Point, in patient mm (type it, or click on the axial image)" }),
        ...["x", "y", "z"].map((axis) => el("label", {}, `${axis} `,
          el("input", { type: "number", step: "any", id: `point-${axis}`, required: true,
            onkeydown: (e) => { if (e.key === "Enter") { e.preventDefault(); showPoint(); } } }))),
        el("button", { type: "button", class: "secondary", id: "go-point", onclick: showPoint }, "Show the point")));
  }
  children.push(
    el("div", { id: "scan" }),
    el("div", { class: "row" }, el("button", { type: "submit", class: "primary", id: "run" }, "Predict")),
    el("div", { class: "status", id: "status", role: "status", "aria-live": "polite" }),
    el("div", { id: "result" }));
  const form = el("form", { id: "predict-form", onsubmit: (event) => { event.preventDefault(); runPredict(ds); } },
    ...children);
  body.replaceChildren(form);
  renderExamples(ds);
}

async function renderExamples(ds) {
  let examples = [];
  try { examples = await getJSON(`/api/examples/${ds.name}`); } catch (e) { examples = []; }
  const box = document.getElementById("examples");
  if (!box || state.current !== ds) return;
  if (!examples.length) {
    box.replaceChildren(el("span", { class: "note", text: "No demo example here (run `dvc repro` to prepare the demo data)." }));
    return;
  }
  box.replaceChildren(el("span", { class: "note", text: "Try an example:" }),
    ...examples.map((ex) => el("button", { type: "button", class: "secondary example", id: `example-${ex.id}`,
      title: ex.file, onclick: () => runExample(ds, ex) }, ex.label.replaceAll("_", " "))));
}

async function runExample(ds, ex) {
  forget();
  document.getElementById("file").value = "";
  setStatus(`Opening ${ex.title}…`);
  try {
    await held(ds, await getJSON(`/api/examples/${ds.name}/${ex.id}`, { method: "POST" }));
  } catch (e) { setStatus(e.message, true); return; }
  if (ex.point) {
    ["x", "y", "z"].forEach((axis, i) => { document.getElementById(`point-${axis}`).value = String(ex.point[i]); });
    showPoint();
  }
  runPredict(ds);
}

async function uploadFile(ds, file) {
  forget();
  document.getElementById("result").replaceChildren();
  const data = new FormData();
  data.append("file", file);
  try {
    const answer = await request("POST", `/api/upload/${ds.name}`, { body: data,
      onUpload: (loaded, total) => progress(`Uploading ${file.name}`, loaded, total) });
    await held(ds, answer);
  } catch (e) {
    hideProgress();
    setStatus(e.message, true);
  }
}

// a kept upload: remember its token; with a volume, fetch it and show the viewer
async function held(ds, answer) {
  state.held = { dataset: ds.name, token: answer.token, name: answer.name };
  document.getElementById("scan").replaceChildren();
  if (!answer.view) { hideProgress(); setStatus(`${answer.name} is ready: press Predict.`); return; }
  const view = answer.view;
  const bytes = await request("GET", `/api/upload/${ds.name}/${answer.token}/volume`, { binary: true,
    onDownload: (loaded, total) => progress("Loading the volume", loaded, total) });
  hideProgress();
  const g = view.geometry;
  const viewer = new window.OncoViewer.Viewer({ data: new Int16Array(bytes), shape: [1, ...view.shape],
    spacing: g.spacing_mm, hu: true, geometry: g.zs ? g : null, lesions: view.lesions || [], label: "scan",
    onPoint: ds.point && g.zs ? (k, r, c) => setPointFromVoxel(k, r, c) : null });
  state.viewer = viewer;
  state.view = view;
  const parts = [viewer.root];
  if ((view.lesions || []).length) {
    parts.push(el("div", { class: "row", id: "lesions" },
      el("span", { class: "note", text: "Lesions of the prepared table in this series (dashed yellow):" }),
      ...view.lesions.map((l, i) => el("button", { type: "button", class: "secondary lesion", id: `lesion-${i}`,
        title: l.id, onclick: () => { setPoint(l.point); } },
      `${l.kind.replaceAll("_", " ")}${l.diameter_mm ? ` ${l.diameter_mm.toFixed(0)} mm` : ""}`))));
  }
  document.getElementById("scan").replaceChildren(...parts);
  setStatus(`${answer.name}: ${view.shape[0]} slices of ${view.shape[1]} x ${view.shape[2]}.` +
    (ds.point ? " Click on the axial image or type the point, then press Predict." : " Press Predict."));
}

function setPoint(point) {
  ["x", "y", "z"].forEach((axis, i) => { document.getElementById(`point-${axis}`).value = point[i].toFixed(1); });
  showPoint();
}

function setPointFromVoxel(k, r, c) {
  const g = state.viewer.geometry;
  const slice = Math.max(0, Math.min(g.zs.length - 1, Math.round(k)));
  setPoint([g.origin_xy[0] + c * g.spacing_xy[0], g.origin_xy[1] + r * g.spacing_xy[1], g.zs[slice]]);
}

// the typed point: the marker, and every plane moved to it
function showPoint() {
  const viewer = state.viewer;
  const value = pointValue();
  if (!viewer || !viewer.geometry) { if (value) setStatus("The point is set; upload the series to see it."); return; }
  if (!value) { setStatus("Type x, y and z.", true); return; }
  const [x, y, z] = value.split(",").map(Number);
  const g = viewer.geometry;
  let k = 0;
  for (let i = 1; i < g.zs.length; i++) if (Math.abs(g.zs[i] - z) < Math.abs(g.zs[k] - z)) k = i;
  const c = (x - g.origin_xy[0]) / g.spacing_xy[0];
  const r = (y - g.origin_xy[1]) / g.spacing_xy[1];
  viewer.goTo(k, r, c);
  const [ex, ey, ez] = g.extent_mm;
  const inside = x >= ex[0] && x <= ex[1] && y >= ey[0] && y <= ey[1] && z >= ez[0] && z <= ez[1];
  setStatus(inside ? `Point on axial slice ${k + 1} of ${g.zs.length}.`
    : `The point is outside the scan (x ${ex[0].toFixed(0)}…${ex[1].toFixed(0)}, y ${ey[0].toFixed(0)}…${ey[1].toFixed(0)}, z ${ez[0].toFixed(0)}…${ez[1].toFixed(0)} mm).`, !inside);
}

function setStatus(text, isError = false) {
  const status = document.getElementById("status");
  if (!status) return;
  status.textContent = text;
  status.className = isError ? "status error" : "status";
}

function pointValue() {
  const values = ["x", "y", "z"].map((axis) => document.getElementById(`point-${axis}`).value.trim());
  return values.some((v) => v === "") ? null : values.join(",");
}

async function runPredict(ds) {
  if (!state.held || state.held.dataset !== ds.name) { setStatus("Choose a file or an example first.", true); return; }
  const data = new FormData();
  data.append("token", state.held.token);
  if (ds.point) {
    const point = pointValue();
    if (!point) { setStatus("Give the point: type x, y, z or click on the scan.", true); return; }
    data.append("point", point);
  }
  const button = document.getElementById("run");
  button.disabled = true;
  document.getElementById("result").replaceChildren();
  if (state.viewer) state.viewer.setScanMap(null);  // the map belongs to the answer shown
  const started = performance.now();
  const tick = () => setStatus(`Predicting… ${((performance.now() - started) / 1000).toFixed(1)} s ` +
    "(preparing the input as the pipeline does, the model, then its Grad-CAM map)");
  tick();
  const timer = setInterval(tick, 100);
  try {
    const answer = await request("POST", `/api/explain/${ds.name}`, { body: data });
    clearInterval(timer);
    setStatus(`Answered in ${Math.round(performance.now() - started)} ms.`);
    renderResult(answer, ds);
  } catch (e) {
    clearInterval(timer);
    setStatus(e.message, true);
  } finally {
    button.disabled = false;
  }
}

function voices() {
  return "speechSynthesis" in window ? window.speechSynthesis.getVoices() : [];
}

function speak(text) {
  const synth = window.speechSynthesis;
  synth.cancel();
  synth.speak(new SpeechSynthesisUtterance(text));
}

function speakButton(spoken) {
  const button = el("button", { type: "button", class: "secondary", id: "speak", onclick: () => speak(spoken) }, "Read aloud");
  const reason = el("span", { class: "note", id: "speak-reason" });
  const update = () => {
    const none = !("speechSynthesis" in window) ? "this browser has no speech synthesis"
      : voices().length ? "" : "no speech voice is installed on this system";
    button.disabled = Boolean(none);
    reason.textContent = none ? `Read aloud is off: ${none}.` : "";
  };
  update();
  if ("speechSynthesis" in window) window.speechSynthesis.addEventListener("voiceschanged", update);
  return [button, reason];
}

function decode(b64) {
  const text = atob(b64);
  const out = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) out[i] = text.charCodeAt(i);
  return out;
}

const HEATMAP_HELP = "The heat map (Grad-CAM) shows which parts of the input raised the score of the " +
  "answer most in the model's last spatial layer: red most, blue least. It shows where the model looked, " +
  "not where disease is, not a boundary, and not why; a map can look plausible for a wrong answer.";

function renderResult(answer, ds) {
  const result = answer.result;
  const said = `${topAnswer(result)}`;
  const spoken = `The ${result.dataset} model says: ${answer.words.replaceAll("%", " percent")}.`;
  const described = ds.classes || {};
  const bars = el("div", { class: "bars", id: "probabilities" },
    ...Object.entries(result.probabilities).sort((a, b) => b[1] - a[1]).flatMap(([name, p]) => [
      el("span", { text: name, title: described[name] || "" }),
      el("div", { class: "bar", role: "img", "aria-label": `${name} ${pct(p)}` },
        widthOf(el("span"), p)),
      el("span", { class: "num", text: pct(p) }),
    ]));
  const warnings = (result.warnings || []).map((w) => el("p", { class: "warning", role: "note", text: `Warning: ${w}` }));
  const mv = answer.model_view;
  const spatial = mv.shape.slice(1);
  const seen = new window.OncoViewer.Viewer({ data: decode(mv.input),
    shape: spatial.length === 3 ? mv.shape : [mv.shape[0], 1, ...spatial],
    spacing: [1, 1, 1], overlay: decode(mv.cam), label: "model" });
  document.getElementById("result").replaceChildren(
    el("div", { id: "answer", "aria-live": "polite", text: said }),
    el("p", { id: "answer-meaning", text: described[result.predicted] || "" }),
    ...warnings,
    el("div", { class: "row" }, ...speakButton(spoken),
      el("span", { class: "note", text: `input ${result.input}${result.point ? `, point ${result.point.join(", ")} mm` : ""}` })),
    bars,
    el("h3", { text: "The input as the model saw it, with its heat map" }),
    el("p", { class: "note", id: "heatmap-help", text: `${HEATMAP_HELP} (${answer.saliency}.)` }),
    seen.root);
  overlayOnScan(answer);
  cropMapOnScan(answer);
}

// where the model saw a crop of the scan (LIDC), its heat map is drawn on the slice the crop
// came from, in the rectangle the server computed from the crop's size and the point
function cropMapOnScan(answer) {
  const m = answer.scan_map;
  const viewer = state.viewer;
  if (!m || !viewer) return;
  viewer.setScanMap({ ...m, cam: decode(m.cam) });
  viewer.setIndex(0, m.slice);
}

// where the dataset declares that the model's input covers the whole volume in the viewer's
// orientation (MosMed), its heat map is drawn over the scan too, brought to the scan's grid
function overlayOnScan(answer) {
  const viewer = state.viewer;
  const mv = answer.model_view;
  if (!viewer || !state.view || state.view.geometry.model_input !== "whole volume" || mv.shape.length !== 4) return;
  const [, d, h, w] = mv.shape;
  const cam = decode(mv.cam);
  const [D, H, W] = state.view.shape;
  const near = (n, m) => Array.from({ length: n }, (_, i) => Math.min(m - 1, Math.floor(((i + 0.5) * m) / n)));
  const [ks, rs, cs] = [near(D, d), near(H, h), near(W, w)];
  const out = new Uint8Array(D * H * W);
  let i = 0;
  for (let k = 0; k < D; k++) {
    for (let r = 0; r < H; r++) {
      const row = (ks[k] * h + rs[r]) * w;
      for (let c = 0; c < W; c++) out[i++] = cam[row + cs[c]];
    }
  }
  viewer.setOverlay(out);
}

// ---------------------------------------------------------------------------------------------
// What the pipeline made
// ---------------------------------------------------------------------------------------------

function table(headers, rows, numeric = []) {
  return el("div", { class: "table-box" }, el("table", {},
    el("thead", {}, el("tr", {}, ...headers.map((h, i) => el("th", { class: numeric.includes(i) ? "num" : null, text: h })))),
    el("tbody", {}, ...rows.map((r) => el("tr", {}, ...r.map((c, i) => el("td", { class: numeric.includes(i) ? "num" : null, text: c })))))));
}

function fmt(v) {
  return typeof v === "number" ? (Number.isInteger(v) ? String(v) : v.toFixed(3)) : String(v);
}

// a plot that opens enlarged, in a dialog, on click (or Enter)
function picture(src, alt) {
  return el("button", { type: "button", class: "enlarge", "aria-label": `${alt}: enlarge`,
    onclick: () => {
      const dialog = document.getElementById("enlarged");
      dialog.querySelector("img").src = src;
      dialog.querySelector("img").alt = alt;
      dialog.showModal();
    } }, el("img", { class: "wide", src, alt }));
}

async function renderCards(name) {
  let cards;
  try { cards = await getJSON(`/api/pipeline/${name}/cards`); } catch (e) { return; }
  const body = document.getElementById("pipeline-body");
  if (state.current.name !== name || !body) return;
  for (const [kind, title] of [["data", "Data card"], ["model", "Model card"]]) {
    if (!cards[kind]) continue;
    body.append(el("details", { class: "card-text", id: `${kind}-card` }, el("summary", { text: title }),
      el("pre", { text: cards[kind] })));
  }
}

async function renderPipeline(name) {
  const body = document.getElementById("pipeline-body");
  body.replaceChildren(el("p", { class: "note", text: "Loading…" }));
  let s;
  try {
    s = await getJSON(`/api/pipeline/${name}`);
  } catch (e) {
    body.replaceChildren(el("p", { class: "error", text: e.message }));
    return;
  }
  if (state.current.name !== name) return;
  const parts = [];
  if (s.missing.length) {
    parts.push(el("p", { class: "missing", text: `Not made yet: ${s.missing.join("; ")}. Run \`dvc repro\`.` }));
  }
  if (s.manifest) {
    const m = s.manifest;
    parts.push(el("h3", { text: "Manifest" }),
      el("p", { class: "note", text: `${m.samples} samples from ${m.patients} ${m.patient_level ? "patients" : "images (no patient ids)"}, layout ${m.layout}` }),
      table(["class", "samples"], Object.entries(m.class_counts).map(([k, v]) => [k, v]), [1]));
  }
  if (s.splits) {
    const classes = Object.keys(Object.values(s.splits)[0].class_counts);
    parts.push(el("h3", { text: `Shards (balance: ${s.balance})` }),
      table(["split", "samples", "patients", ...classes],
        Object.entries(s.splits).map(([split, v]) => [split, v.samples, v.patients, ...classes.map((c) => v.class_counts[c])]),
        [1, 2, ...classes.map((_, i) => i + 3)]));
  }
  for (const r of s.rejects) {
    const report = r.report || {};
    parts.push(el("h3", { text: `Rejects (${r.file})` }),
      el("p", { class: "note", text: `read ${fmt(report.read ?? "?")}, kept ${fmt(report.kept ?? "?")}, rejected ${r.total}` }));
    if (r.total) {
      parts.push(table(["reason", "count"], Object.entries(r.by_reason), [1]),
        el("details", {}, el("summary", { text: `the ${r.rows.length === r.total ? "" : `first ${r.rows.length} of `}${r.total} rejected items` }),
          table(["path", "reason"], r.rows.map((row) => [row.path, row.reason]))));
    }
  }
  if (s.images.contact_sheet) {
    parts.push(el("h3", { text: "Contact sheet" }),
      el("p", { class: "note", text: "A few prepared samples of each class, as the model receives them: a check that the preparation kept what matters." }),
      picture(`/api/pipeline/${name}/contact_sheet.png`, `${name} contact sheet`));
  }
  if (s.metrics) {
    const m = s.metrics;
    const ci = m.ci || {};
    const keys = ["accuracy", "balanced_accuracy", "auc", "sensitivity", "specificity", "f1", "ece"]
      .filter((k) => k in m && m[k] !== null);
    const interval = (k) => (ci[k] && ci[k].low !== null ? `${ci[k].low.toFixed(3)} – ${ci[k].high.toFixed(3)}` : "");
    const size = (k) => (ci[k] && ci[k].n !== undefined ? `${ci[k].n} / ${ci[k].n_patients}` : "");
    const flag = (k) => (ci[k] && ci[k].small_n ? "small n: says little" : "");
    parts.push(el("h3", { text: `Test metrics (${m.n_test} samples${m.n_test_patients ? `, ${m.n_test_patients} patients` : ""})` }),
      table(["metric", "value", `${Math.round(100 * (ci.level || 0.95))}% CI`, "n (samples / patients)", ""],
        keys.map((k) => [k, m[k].toFixed(3), interval(k), size(k), flag(k)]), [1]));
    if (m.provenance) {
      const pv = m.provenance;
      const raw = pv.raw
        ? `${pv.raw.source}${pv.raw.source === "demo" ? " (synthetic: not a measure of the method)" : ""}, manifest ${String(pv.raw.manifest_sha256).slice(0, 12)}`
        : "not recorded";
      parts.push(el("p", { class: "note", id: "provenance", text:
        `Profile ${pv.profile}; raw data: ${raw}; oncopipe ${pv.code ? pv.code.version : "?"}.` }));
    }
    const op = m.operating_point;
    if (op) {
      const f = (v) => (v === null || v === undefined ? "n/a" : Number(v).toFixed(3));
      parts.push(el("p", { class: "note", id: "operating-point", text:
        `Operating point chosen on ${op.chosen_on} (${op.n_val} samples) for specificity ≥ ${op.target_specificity}` +
        `${op.threshold !== undefined ? `, threshold ${f(op.threshold)}` : ""} (${op.rule}): ` +
        (op.resolved === false
          ? `the validation split has too few negatives to resolve it (${op.val_negatives ?? "some class"} < ${op.min_val_negatives}): ` +
            `test sensitivity somewhere in ${f(op.test_sensitivity_range[0])} – ${f(op.test_sensitivity_range[1])}, specificity ${f(op.test_specificity)}.`
          : `test sensitivity ${f(op.test_sensitivity)}, specificity ${f(op.test_specificity)}.`) }));
    }
  }
  if (s.images.evaluation) {
    parts.push(el("h3", { text: "Confusion, ROC, calibration" }),
      el("p", { class: "note", text: "On the held-out test patients: how often each true class got each answer (confusion), " +
        "how sensitivity trades against specificity as the threshold moves (ROC), and whether a stated " +
        "probability of 70% is right about 70% of the time (calibration). Click to enlarge." }),
      picture(`/api/pipeline/${name}/evaluation.png`, `${name} evaluation plots`));
  }
  if (s.images.curves) {
    parts.push(el("h3", { text: "Training curves" }),
      el("p", { class: "note", text: "Loss and accuracy per epoch on the training and validation splits: " +
        "validation figures that stop improving while training ones still do mean the model is memorising." }),
      picture(`/api/pipeline/${name}/curves.png`, `${name} training curves`));
  }
  body.replaceChildren(...parts);
  renderCards(name);
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("close-enlarged").addEventListener("click", () => document.getElementById("enlarged").close());
  start();
});
window.addEventListener("pagehide", forget);
window.addEventListener("hashchange", () => {
  const name = location.hash.slice(1);
  if (state.datasets.some((d) => d.name === name) && state.current?.name !== name) select(name);
});
