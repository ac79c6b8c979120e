// oncopipe serve: the page. Plain DOM, no framework, no network beyond this server.
// Text from the server (file names, reasons) is always set as text, never parsed as HTML.
"use strict";

const state = { datasets: [], current: null, scan: null };

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

const pct = (p) => `${(100 * p).toFixed(1)}%`;

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
  state.scan = null;
  for (const button of document.querySelectorAll("nav button")) {
    button.setAttribute("aria-selected", String(button.id === `tab-${name}`));
  }
  history.replaceState(null, "", `#${name}`);
  renderPredict(state.current);
  renderPipeline(name);
}

// ---------------------------------------------------------------------------------------------
// Predict
// ---------------------------------------------------------------------------------------------

function renderPredict(ds) {
  const body = document.getElementById("predict-body");
  if (!ds.model) {
    body.replaceChildren(el("p", { class: "missing", id: "no-model",
      text: `No model trained yet for ${ds.name}: run \`dvc repro train@${ds.name}\`, then reload.` }));
    return;
  }
  const m = ds.model;
  const fileInput = el("input", { type: "file", id: "file", name: "file", accept: ds.accept.join(","),
    "aria-label": "input file", onchange: () => { state.scan = null; renderScan(); } });
  const children = [
    el("p", { class: "note", text: `Model: ${m.model}, task ${m.task}, classes ${m.class_names.join(", ")}. ` +
      `Input: ${ds.expected}${ds.kind === "series" ? " (upload the folder as a .zip)" : ""}.` }),
    el("div", { class: "row" }, fileInput),
  ];
  if (ds.point) {
    children.push(
      el("div", { class: "row" },
        el("button", { type: "button", class: "secondary", id: "show-scan", onclick: loadScan },
          "Show the scan to click a point"),
        el("span", { class: "note", text: "or type the point (patient mm):" })),
      el("div", { class: "row" },
        ...["x", "y", "z"].map((axis) => el("label", {}, `${axis} `,
          el("input", { type: "number", step: "any", id: `point-${axis}`, required: true })))),
      el("div", { id: "scan" }));
  }
  children.push(
    el("div", { class: "row" }, el("button", { type: "submit", class: "primary", id: "run" }, "Predict")),
    el("div", { class: "status", id: "status", role: "status" }),
    el("div", { id: "result" }));
  const form = el("form", { id: "predict-form", onsubmit: (event) => { event.preventDefault(); runPredict(ds); } },
    ...children);
  body.replaceChildren(form);
}

function setStatus(text, isError = false) {
  const status = document.getElementById("status");
  status.textContent = text;
  status.className = isError ? "status error" : "status";
}

function pointValue() {
  const values = ["x", "y", "z"].map((axis) => document.getElementById(`point-${axis}`).value.trim());
  return values.some((v) => v === "") ? null : values.join(",");
}

async function runPredict(ds) {
  const file = document.getElementById("file").files[0];
  if (!file) { setStatus("Choose a file first.", true); return; }
  const data = new FormData();
  data.append("file", file);
  if (ds.point) {
    const point = pointValue();
    if (!point) { setStatus("Give the point: type x, y, z or click on the scan.", true); return; }
    data.append("point", point);
  }
  const button = document.getElementById("run");
  button.disabled = true;
  setStatus("Predicting…");
  document.getElementById("result").replaceChildren();
  const started = performance.now();
  try {
    const answer = await getJSON(`/api/explain/${ds.name}`, { method: "POST", body: data });
    setStatus(`Answered in ${Math.round(performance.now() - started)} ms.`);
    renderResult(answer);
  } catch (e) {
    setStatus(e.message, true);
  } finally {
    button.disabled = false;
  }
}

function speak(text) {
  const synth = window.speechSynthesis;
  synth.cancel();
  synth.speak(new SpeechSynthesisUtterance(text));
}

function renderResult(answer) {
  const result = answer.result;
  const said = `${topAnswer(result)}`;
  const spoken = `The ${result.dataset} model says: ${answer.words.replaceAll("%", " percent")}.`;
  const canSpeak = "speechSynthesis" in window;
  const bars = el("div", { class: "bars", id: "probabilities" },
    ...Object.entries(result.probabilities).sort((a, b) => b[1] - a[1]).flatMap(([name, p]) => [
      el("span", { text: name }),
      el("div", { class: "bar", role: "img", "aria-label": `${name} ${pct(p)}` },
        widthOf(el("span"), p)),
      el("span", { class: "num", text: pct(p) }),
    ]));
  const figures = answer.views.map((v) => el("div", { class: "view" },
    el("div", { class: "views" },
      el("figure", {}, el("img", { src: v.input, alt: `input, ${v.title}` }), el("figcaption", { text: `as the model saw it: ${v.title}` })),
      el("figure", {}, el("img", { src: v.saliency, alt: `saliency, ${v.title}` }), el("figcaption", { text: answer.saliency })))));
  document.getElementById("result").replaceChildren(
    el("div", { id: "answer", "aria-live": "polite", text: said }),
    el("div", { class: "row" },
      el("button", { type: "button", class: "secondary", id: "speak", disabled: !canSpeak,
        title: canSpeak ? "spoken by this browser, offline" : "this browser has no speech synthesis",
        onclick: () => speak(spoken) }, "Read aloud"),
      el("span", { class: "note", text: `input ${result.input}${result.point ? `, point ${result.point.join(", ")} mm` : ""}` })),
    ...(result.warnings || []).map((w) => el("p", { class: "warning", role: "note", text: `Warning: ${w}` })),
    bars,
    ...figures);
}

// ---------------------------------------------------------------------------------------------
// LIDC: show the series, click a point
// ---------------------------------------------------------------------------------------------

async function loadScan() {
  const ds = state.current;
  const file = document.getElementById("file").files[0];
  if (!file) { setStatus("Choose the zipped series folder first.", true); return; }
  const data = new FormData();
  data.append("file", file);
  setStatus("Reading the series…");
  try {
    state.scan = await getJSON(`/api/scan/${ds.name}`, { method: "POST", body: data });
    setStatus(`${state.scan.geometry.zs.length} slices; click on the slice to set the point.`);
    renderScan(Math.floor(state.scan.slices.length / 2));
  } catch (e) {
    setStatus(e.message, true);
  }
}

function renderScan(position = 0) {
  const box = document.getElementById("scan");
  if (!box) return;
  if (!state.scan) { box.replaceChildren(); return; }
  const { geometry, slices } = state.scan;
  const slice = slices[position];
  const [x0, y0] = geometry.origin_xy;
  const [sx, sy] = geometry.spacing_xy;
  const [rows, cols] = geometry.shape_yx;
  const img = el("img", { src: slice.image, alt: `axial slice at z ${slice.z.toFixed(1)} mm`, id: "scan-image" });
  const mark = el("div", { class: "mark", hidden: true });
  img.addEventListener("click", (event) => {
    const rect = img.getBoundingClientRect();
    const col = ((event.clientX - rect.left) / rect.width) * cols - 0.5;
    const row = ((event.clientY - rect.top) / rect.height) * rows - 0.5;
    document.getElementById("point-x").value = (x0 + col * sx).toFixed(1);
    document.getElementById("point-y").value = (y0 + row * sy).toFixed(1);
    document.getElementById("point-z").value = slice.z.toFixed(1);
    mark.hidden = false;
    mark.style.left = `${event.clientX - rect.left}px`;
    mark.style.top = `${event.clientY - rect.top}px`;
  });
  const slider = el("input", { type: "range", min: 0, max: slices.length - 1, value: position,
    "aria-label": "slice", oninput: (event) => renderScan(Number(event.target.value)) });
  const [ex, ey, ez] = geometry.extent_mm;
  box.replaceChildren(
    el("div", { class: "scan" }, img, mark),
    el("div", { class: "row" }, slider,
      el("span", { class: "note", text: `z ${slice.z.toFixed(1)} mm; scan x ${ex[0].toFixed(0)}…${ex[1].toFixed(0)}, ` +
        `y ${ey[0].toFixed(0)}…${ey[1].toFixed(0)}, z ${ez[0].toFixed(0)}…${ez[1].toFixed(0)} mm` })));
}

// ---------------------------------------------------------------------------------------------
// What the pipeline made
// ---------------------------------------------------------------------------------------------

function table(headers, rows, numeric = []) {
  return el("table", {},
    el("thead", {}, el("tr", {}, ...headers.map((h, i) => el("th", { class: numeric.includes(i) ? "num" : null, text: h })))),
    el("tbody", {}, ...rows.map((r) => el("tr", {}, ...r.map((c, i) => el("td", { class: numeric.includes(i) ? "num" : null, text: c }))))));
}

function fmt(v) {
  return typeof v === "number" ? (Number.isInteger(v) ? String(v) : v.toFixed(3)) : String(v);
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
      el("img", { class: "wide", src: `/api/pipeline/${name}/contact_sheet.png`, alt: `${name} contact sheet` }));
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
      el("img", { class: "wide", src: `/api/pipeline/${name}/evaluation.png`, alt: `${name} evaluation plots` }));
  }
  if (s.images.curves) {
    parts.push(el("h3", { text: "Training curves" }),
      el("img", { class: "wide", src: `/api/pipeline/${name}/curves.png`, alt: `${name} training curves` }));
  }
  body.replaceChildren(...parts);
}

document.addEventListener("DOMContentLoaded", start);
window.addEventListener("hashchange", () => {
  const name = location.hash.slice(1);
  if (state.datasets.some((d) => d.name === name) && state.current?.name !== name) select(name);
});
