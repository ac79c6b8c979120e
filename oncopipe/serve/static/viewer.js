// oncopipe serve: the volume viewer. Plain canvas, no library, nothing from a network.
// The server sends a volume once (raw int16 HU, or the model's uint8 input); every slice is
// cut here. Planes: axial (D slices of H x W), coronal (H rows: D x W, head up) and sagittal
// (W columns: D x H, head up). Sliders, the wheel and the arrow keys move through slices
// without rebuilding anything, so a drag stays a drag and the focus stays where it is.
"use strict";

const WL_PRESETS = {
  lung: { level: -600, width: 1500, label: "lung (L -600, W 1500)" },
  mediastinum: { level: 40, width: 400, label: "mediastinum (L 40, W 400)" },
  bone: { level: 300, width: 1500, label: "bone (L 300, W 1500)" },
};

// the jet colour map, as the heat maps use it (blue: low, red: high)
const JET = (() => {
  const lut = new Uint8Array(256 * 3);
  const f = (x) => Math.round(255 * Math.max(0, Math.min(1, x)));
  for (let i = 0; i < 256; i++) {
    const v = i / 255;
    lut[3 * i] = f(1.5 - Math.abs(4 * v - 3));
    lut[3 * i + 1] = f(1.5 - Math.abs(4 * v - 2));
    lut[3 * i + 2] = f(1.5 - Math.abs(4 * v - 1));
  }
  return lut;
})();

function node(tag, attrs = {}, ...children) {
  const n = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "text") n.textContent = v;
    else n.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) n.append(c);
  return n;
}

// a w x h canvas of uint8 values (row by row) in the heat map's colours, fully opaque
function jetCanvas(values, w, h, attrs = {}) {
  const canvas = node("canvas", { width: w, height: h, ...attrs });
  const ctx = canvas.getContext("2d");
  const img = ctx.createImageData(w, h);
  for (let i = 0; i < w * h; i++) {
    const j = 3 * values[i];
    img.data.set([JET[j], JET[j + 1], JET[j + 2], 255], 4 * i);
  }
  ctx.putImageData(img, 0, 0);
  return canvas;
}

function colourBar(label) {
  const ramp = Uint8Array.from({ length: 256 }, (_, i) => i);
  const canvas = jetCanvas(ramp, 256, 1, { class: "colourbar", role: "img",
    "aria-label": `colour scale of ${label}: blue low, red high` });
  return node("div", { class: "colourbar-box" },
    node("span", { class: "note", text: "low" }), canvas, node("span", { class: "note", text: "high" }));
}

class Viewer {
  // opts: data (Int16Array HU or Uint8Array), shape [C, D, H, W], spacing [d, h, w] mm,
  // hu (window/level applies), overlay (Uint8Array [D, H, W] or null), geometry (mm mapping),
  // lesions, onPoint(k, r, c), label, planes (which to show).
  constructor(opts) {
    Object.assign(this, { overlay: null, scanMap: null, geometry: null, lesions: [], onPoint: null, hu: false,
      label: "volume", opacity: 0.45 }, opts);
    [this.C, this.D, this.H, this.W] = this.shape;
    this.index = [Math.floor(this.D / 2), Math.floor(this.H / 2), Math.floor(this.W / 2)];
    this.marker = null;
    this.pending = new Set();
    this.setWindow(WL_PRESETS.lung.level, WL_PRESETS.lung.width);
    const names = this.D > 1 ? (this.planes || ["axial", "coronal", "sagittal"]) : ["axial"];
    this.views = names.map((name) => this.makePlane(name));
    this.root = node("div", { class: "viewer" }, this.controls(), node("div", { class: "planes" },
      this.views.map((v) => v.box)));
    for (const v of this.views) this.draw(v);
  }

  setWindow(level, width) {
    this.level = level;
    this.width = Math.max(1, width);
    if (!this.hu) {
      this.lut = null;
    } else {
      const lo = level - this.width / 2;
      const lut = new Uint8Array(65536);
      for (let i = 0; i < 65536; i++) {
        const v = ((i - 32768 - lo) / this.width) * 255;
        lut[i] = v <= 0 ? 0 : v >= 255 ? 255 : v;
      }
      this.lut = lut;
    }
    if (this.wlText) this.wlText.textContent = `L ${Math.round(this.level)}, W ${Math.round(this.width)} HU`;
    if (this.views) for (const v of this.views) this.schedule(v);
  }

  controls() {
    const parts = [];
    if (this.hu) {
      this.wlText = node("span", { class: "note", id: `${this.label}-wl`, text: "" });
      const select = node("select", { id: `${this.label}-preset`, "aria-label": "window and level preset" },
        Object.entries(WL_PRESETS).map(([k, p]) => node("option", { value: k, text: p.label })));
      select.addEventListener("change", () => {
        const p = WL_PRESETS[select.value];
        this.setWindow(p.level, p.width);
      });
      this.setWindow(this.level, this.width);
      parts.push(node("label", {}, "Window ", select), this.wlText,
        node("span", { class: "note", text: "drag on an image: left-right width, up-down level" }));
    }
    if (this.overlay) parts.push(...this.overlayControls());
    this.controlsBox = node("div", { class: "row viewer-controls" }, parts);
    return this.controlsBox;
  }

  overlayControls() {
    const slider = node("input", { type: "range", min: 0, max: 100, value: Math.round(this.opacity * 100),
      id: `${this.label}-opacity`, "aria-label": "heat map opacity" });
    slider.addEventListener("input", () => {
      this.opacity = Number(slider.value) / 100;
      for (const v of this.views) this.schedule(v);
    });
    this.opacitySlider = slider;
    return [node("label", {}, "Heat map opacity ", slider), colourBar("the heat map")];
  }

  // a heat map (uint8, the viewer's D x H x W grid) drawn over the images from now on
  setOverlay(overlay) {
    this.overlay = overlay;
    if (!this.opacitySlider) this.controlsBox.append(...this.overlayControls());
    for (const v of this.views) this.schedule(v);
  }

  // a heat map over one axial slice only, in a rectangle of it (an LIDC crop's map where the
  // crop lies): m = {slice, rect, visible ([top, left, bottom, right] in the slice's pixel
  // index, pixel centres at integers, from the server), shape [h, w], cam (Uint8Array)}; null
  // removes it. Drawn above the windowed slice, so it follows window/level.
  setScanMap(m) {
    this.scanMap = null;
    if (m) {
      const [h, w] = m.shape;
      this.scanMap = { ...m, tile: jetCanvas(m.cam, w, h) };
      if (!this.opacitySlider) this.controlsBox.append(...this.overlayControls());
    }
    for (const v of this.views) this.schedule(v);
  }

  drawScanMap(v, ctx, s, sx, sy) {
    const m = this.scanMap;
    if (!m || v.name !== "axial" || m.slice !== s) return false;
    const [top, left, bottom, right] = m.rect;
    const [vt, vl, vb, vr] = m.visible;
    ctx.save();
    ctx.beginPath();
    ctx.rect((vl + 0.5) * sx, (vt + 0.5) * sy, (vr - vl) * sx, (vb - vt) * sy);
    ctx.clip();
    ctx.globalAlpha = this.opacity;
    ctx.imageSmoothingEnabled = true;
    ctx.drawImage(m.tile, (left + 0.5) * sx, (top + 0.5) * sy, (right - left) * sx, (bottom - top) * sy);
    ctx.restore();
    return true;
  }

  // plane geometry: image rows/cols, their spacing, and how (index, row, col) maps to voxels
  planeInfo(name) {
    const [sd, sh, sw] = this.spacing;
    if (name === "axial") return { axis: 0, n: this.D, rows: this.H, cols: this.W, dy: sh, dx: sw };
    if (name === "coronal") return { axis: 1, n: this.H, rows: this.D, cols: this.W, dy: sd, dx: sw };
    return { axis: 2, n: this.W, rows: this.D, cols: this.H, dy: sd, dx: sh };
  }

  // voxel (k, r, c) under image pixel (y, x) of plane v at slice s
  voxel(v, s, y, x) {
    if (v.name === "axial") return [s, y, x];
    if (v.name === "coronal") return [this.D - 1 - y, s, x];
    return [this.D - 1 - y, x, s];
  }

  // image position (y, x) of voxel (k, r, c) in plane v
  pixel(v, k, r, c) {
    if (v.name === "axial") return [r, c];
    if (v.name === "coronal") return [this.D - 1 - k, c];
    return [this.D - 1 - k, r];
  }

  makePlane(name) {
    const info = this.planeInfo(name);
    const v = { name, ...info };
    v.off = node("canvas", { width: info.cols, height: info.rows });
    v.image = v.off.getContext("2d").createImageData(info.cols, info.rows);
    const aspect = (info.rows * info.dy) / (info.cols * info.dx);
    v.cssW = 256;
    v.cssH = Math.max(40, Math.round(v.cssW * aspect));
    const ratio = window.devicePixelRatio || 1;
    v.canvas = node("canvas", { id: `${this.label}-${name}`, tabindex: 0, class: "plane",
      width: Math.round(v.cssW * ratio), height: Math.round(v.cssH * ratio), role: "img",
      "aria-label": `${name} view; arrow keys or the wheel move through slices${this.onPoint && name === "axial" ? "; click to set the point" : ""}` });
    v.canvas.style.aspectRatio = `${v.cssW} / ${v.cssH}`;
    v.caption = node("span", { class: "note slice-label", id: `${this.label}-${name}-label` });
    if (info.n > 1) {
      v.slider = node("input", { type: "range", min: 0, max: info.n - 1, step: 1, value: this.index[info.axis],
        id: `${this.label}-${name}-slider`, "aria-label": `${name} slice` });
      v.slider.addEventListener("input", () => this.setIndex(info.axis, Number(v.slider.value), v.slider));
    }
    v.canvas.addEventListener("wheel", (e) => {
      e.preventDefault();
      this.setIndex(info.axis, this.index[info.axis] + (e.deltaY > 0 ? 1 : -1));
    }, { passive: false });
    v.canvas.addEventListener("keydown", (e) => {
      const step = { ArrowUp: 1, ArrowRight: 1, PageUp: 10, ArrowDown: -1, ArrowLeft: -1, PageDown: -10 }[e.key];
      if (step === undefined) return;
      e.preventDefault();
      this.setIndex(info.axis, this.index[info.axis] + step);
    });
    this.pointerHandlers(v);
    v.box = node("figure", { class: "plane-box" }, v.canvas,
      node("figcaption", {}, v.slider || null, v.caption));
    return v;
  }

  pointerHandlers(v) {
    let start = null;
    v.canvas.addEventListener("pointerdown", (e) => {
      start = { x: e.clientX, y: e.clientY, level: this.level, width: this.width, moved: false };
      v.canvas.setPointerCapture(e.pointerId);
    });
    v.canvas.addEventListener("pointermove", (e) => {
      if (!start) return;
      const dx = e.clientX - start.x;
      const dy = e.clientY - start.y;
      if (Math.abs(dx) + Math.abs(dy) > 4) start.moved = true;
      if (start.moved && this.hu) this.setWindow(start.level - 4 * dy, start.width + 8 * dx);
    });
    v.canvas.addEventListener("pointerup", (e) => {
      const s = start;
      start = null;
      if (!s || s.moved || !this.onPoint) return;
      const rect = v.canvas.getBoundingClientRect();
      const x = ((e.clientX - rect.left) / rect.width) * v.cols - 0.5;
      const y = ((e.clientY - rect.top) / rect.height) * v.rows - 0.5;
      const [k, r, c] = this.voxel(v, this.index[v.axis], y, x);
      this.onPoint(k, r, c);
    });
  }

  setIndex(axis, value, source = null) {
    const v = this.views.find((p) => p.axis === axis);
    if (!v) return;
    const clamped = Math.max(0, Math.min(v.n - 1, Math.round(value)));
    this.index[axis] = clamped;
    if (v.slider && v.slider !== source && Number(v.slider.value) !== clamped) v.slider.value = String(clamped);
    this.schedule(v);
  }

  // a voxel (float k, r, c) to mark and show in every plane
  goTo(k, r, c) {
    this.marker = [k, r, c];
    for (const v of this.views) this.setIndex(v.axis, [k, r, c][v.axis]);
    for (const v of this.views) this.schedule(v);
  }

  schedule(v) {
    if (this.pending.has(v)) return;
    this.pending.add(v);
    requestAnimationFrame(() => {
      this.pending.delete(v);
      this.draw(v);
    });
  }

  draw(v) {
    const s = this.index[v.axis];
    const { rows, cols } = v;
    const px = v.image.data;
    const plane = this.D * this.H * this.W;
    const lut = this.lut;
    const data = this.data;
    const ov = this.overlay;
    const HW = this.H * this.W;
    const [base, rowStep, colStep] = v.name === "axial" ? [s * HW, this.W, 1]
      : v.name === "coronal" ? [(this.D - 1) * HW + s * this.W, -HW, 1]
        : [(this.D - 1) * HW + s, -HW, this.W];
    if (this.C === 1 && !ov && lut) {  // the common case, a CT slice: one 32-bit write a pixel
      const out = v.words || (v.words = new Uint32Array(px.buffer));
      let i = 0;
      for (let y = 0; y < rows; y++) {
        let at = base + y * rowStep;
        for (let x = 0; x < cols; x++, at += colStep, i++) {
          const g = lut[data[at] + 32768];
          out[i] = 0xff000000 | (g << 16) | (g << 8) | g;
        }
      }
    } else {
      this.blend(px, rows, cols, base, rowStep, colStep, plane);
    }
    this.present(v, s);
  }

  // the general case: grey or RGB input, with the heat map blended in at the chosen opacity
  blend(px, rows, cols, base, rowStep, colStep, plane) {
    const { lut, data } = this;
    const ov = this.overlay;
    const a = this.opacity;
    const second = this.C === 3 ? plane : 0;
    const third = this.C === 3 ? 2 * plane : 0;
    let o = 0;
    for (let y = 0; y < rows; y++) {
      let at = base + y * rowStep;
      for (let x = 0; x < cols; x++, at += colStep, o += 4) {
        let r0 = data[at];
        let g0 = data[at + second];
        let b0 = data[at + third];
        if (lut) { r0 = lut[r0 + 32768]; g0 = lut[g0 + 32768]; b0 = lut[b0 + 32768]; }
        if (ov) {
          const h = 3 * ov[at];
          r0 = r0 * (1 - a) + JET[h] * a;
          g0 = g0 * (1 - a) + JET[h + 1] * a;
          b0 = b0 * (1 - a) + JET[h + 2] * a;
        }
        px[o] = r0; px[o + 1] = g0; px[o + 2] = b0; px[o + 3] = 255;
      }
    }
  }

  // the slice on screen, then the lesions, the marker and the caption over it
  present(v, s) {
    const { rows, cols } = v;
    v.off.getContext("2d").putImageData(v.image, 0, 0);
    const ctx = v.canvas.getContext("2d");
    const sx = v.canvas.width / cols;
    const sy = v.canvas.height / rows;
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(v.off, 0, 0, v.canvas.width, v.canvas.height);
    const heat = this.drawScanMap(v, ctx, s, sx, sy);
    this.drawLesions(v, ctx, s, sx, sy);
    if (this.marker) {
      const [my, mx] = this.pixel(v, ...this.marker);
      const [cy, cx] = [(my + 0.5) * sy, (mx + 0.5) * sx];
      const onSlice = Math.abs(this.marker[v.axis] - s) < 0.5;
      ctx.strokeStyle = onSlice ? "#ff3b30" : "rgba(255, 59, 48, 0.5)";
      ctx.lineWidth = 2;
      ctx.beginPath();
      ctx.arc(cx, cy, 9, 0, 2 * Math.PI);
      ctx.moveTo(cx - 16, cy); ctx.lineTo(cx - 10, cy);
      ctx.moveTo(cx + 10, cy); ctx.lineTo(cx + 16, cy);
      ctx.moveTo(cx, cy - 16); ctx.lineTo(cx, cy - 10);
      ctx.moveTo(cx, cy + 10); ctx.lineTo(cx, cy + 16);
      ctx.stroke();
    }
    v.canvas.dataset.slice = String(s);
    v.canvas.dataset.marker = this.marker ? this.marker.map((m) => m.toFixed(2)).join(",") : "";
    if (v.name === "axial") v.canvas.dataset.heatmap = heat ? "shown" : "";
    v.caption.textContent = this.caption(v, s);
  }

  drawLesions(v, ctx, s, sx, sy) {
    if (!this.lesions.length || !this.geometry || v.name !== "axial") return;
    const g = this.geometry;
    const z = g.zs[s];
    ctx.strokeStyle = "#ffd60a";
    ctx.lineWidth = 1.5;
    ctx.setLineDash([4, 3]);
    for (const lesion of this.lesions) {
      const [x, y, lz] = lesion.point;
      const radius = (lesion.diameter_mm || 3) / 2;
      const dz = Math.abs(lz - z);
      if (dz > Math.max(radius, this.spacing[0] / 2)) continue;
      const inPlane = Math.sqrt(Math.max(radius * radius - dz * dz, 1));
      const c = (x - g.origin_xy[0]) / g.spacing_xy[0];
      const r = (y - g.origin_xy[1]) / g.spacing_xy[1];
      ctx.beginPath();
      ctx.ellipse((c + 0.5) * sx, (r + 0.5) * sy, (inPlane / g.spacing_xy[0]) * sx + 3,
        (inPlane / g.spacing_xy[1]) * sy + 3, 0, 0, 2 * Math.PI);
      ctx.stroke();
    }
    ctx.setLineDash([]);
  }

  caption(v, s) {
    if (v.n === 1) return "";
    const base = `${v.name} ${s + 1} / ${v.n}`;
    const g = this.geometry;
    if (!g || !g.zs || v.name !== "axial") return base;
    const m = this.scanMap;
    const heat = !m ? "" : m.slice === s ? ", heat map shown" : `, heat map on slice ${m.slice + 1}`;
    return `${base}, z ${g.zs[s].toFixed(1)} mm${heat}`;
  }
}

window.OncoViewer = { Viewer, WL_PRESETS, colourBar };
