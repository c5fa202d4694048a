// bcos-clip explorer: talks to POST /explain, POST /sheet, GET /health, GET /examples. No build step.
"use strict";

const state = { image: null, imageName: null, last: null, busy: false, pending: false };
const $ = (id) => document.getElementById(id);

function setStatus(text, isError = false) {
  const el = $("status");
  el.textContent = text;
  el.classList.toggle("error", isError);
}

function addPrompt(value = "") {
  const row = document.createElement("div");
  row.className = "prompt-row";
  const input = document.createElement("input");
  input.type = "text";
  input.className = "prompt-input";
  input.placeholder = "a prompt, e.g. a red circle";
  input.value = value;
  input.maxLength = 200;
  input.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter") { ev.preventDefault(); explain(); }
  });
  const remove = document.createElement("button");
  remove.type = "button";
  remove.className = "remove-prompt";
  remove.title = "remove this prompt";
  remove.textContent = "×";
  remove.addEventListener("click", () => {
    row.remove();
    if (!document.querySelector(".prompt-input")) addPrompt();
  });
  row.append(input, remove);
  $("prompts").append(row);
  return input;
}

function prompts() {
  return [...document.querySelectorAll(".prompt-input")].map((el) => el.value.trim()).filter((v) => v);
}

function setImage(blob, name) {
  state.image = blob;
  state.imageName = name;
  const preview = $("preview");
  if (preview.src) URL.revokeObjectURL(preview.src);
  preview.src = URL.createObjectURL(blob);
  preview.hidden = false;
  if (prompts().length) explain();
}

function formData() {
  const fd = new FormData();
  fd.append("image", state.image, state.imageName || "image");
  for (const p of prompts()) fd.append("prompts", p);
  fd.append("method", $("method").value);
  fd.append("template", $("template").value);
  return fd;
}

async function post(path) {
  const res = await fetch(path, { method: "POST", body: formData() });
  if (!res.ok) {
    let detail = res.statusText;
    try { detail = (await res.json()).detail || detail; } catch (e) { /* not JSON */ }
    throw new Error(`${res.status}: ${detail}`);
  }
  return res;
}

function ready() {
  if (!state.image) { setStatus("choose an image first", true); return false; }
  if (!prompts().length) { setStatus("type at least one prompt", true); return false; }
  return true;
}

async function explain() {
  if (!ready()) return;
  if (state.busy) { state.pending = true; return; }
  state.busy = true;
  setStatus("explaining…");
  try {
    const data = await (await post("/explain")).json();
    state.last = data;
    render(data);
    const t = data.timings_ms;
    setStatus(`${data.cache_hit ? "cached image" : "new image"} · image tower ${t.image_tower} ms · ` +
              `text ${t.text} ms · maps ${t.explain} ms · pictures ${t.render} ms · total ${t.total} ms`);
    $("download-sheet").disabled = false;
    $("download-json").disabled = false;
  } catch (err) {
    setStatus(err.message, true);
  } finally {
    state.busy = false;
    if (state.pending) { state.pending = false; explain(); }
  }
}

function softmax(scores, scale = 100) {
  const m = Math.max(...scores);
  const e = scores.map((s) => Math.exp(scale * (s - m)));
  const z = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / z);
}

function picture(b64, cls, alt, caption) {
  const fig = document.createElement("figure");
  const img = document.createElement("img");
  img.className = cls;
  img.alt = alt;
  img.src = `data:image/png;base64,${b64}`;
  const cap = document.createElement("figcaption");
  cap.textContent = caption;
  fig.append(img, cap);
  return fig;
}

function render(data) {
  $("model-input").src = `data:image/png;base64,${data.image_png}`;
  $("input-size").textContent = `(${data.image_size[1]}×${data.image_size[0]} px)`;
  $("input-card").hidden = false;
  const probs = softmax(data.results.map((r) => r.score));
  const cards = data.results.map((r, i) => {
    const card = document.createElement("article");
    card.className = "result-card";
    const title = document.createElement("h3");
    title.textContent = r.prompt;
    const score = document.createElement("p");
    score.className = "score";
    score.textContent = `cos ${r.score.toFixed(3)} · p ${probs[i].toFixed(2)}` +
      (r.bias === null ? "" : ` · bias ${r.bias.toFixed(3)}`);
    const pics = document.createElement("div");
    pics.className = "pictures";
    const kind = r.explanation_kind === "colour" ? "colour explanation" : "overlay";
    pics.append(picture(r.explanation_png, `explanation ${r.explanation_kind}`, `${kind} for ${r.prompt}`, kind),
                picture(r.heatmap_png, "heatmap", `contribution heat map for ${r.prompt}`, "contributions"));
    card.append(title, score, pics);
    return card;
  });
  $("results").replaceChildren(...cards);
  const legend = $("legend");
  legend.hidden = false;
  legend.textContent = `${data.method_label}. cos = cosine of image and prompt; p = softmax over these ` +
    "prompts at logit scale 100. Heat maps: red adds to the score, blue subtracts (clipped at the 99.5th " +
    "percentile). " + (data.is_bcos ? "Colour explanations show the colours the model looks for, where the " +
    "prompt gains (on black). Contributions + bias = cos exactly." : "Post-hoc baseline on the teacher.");
}

function download(blob, name) {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 1000);
}

async function downloadSheet() {
  if (!ready()) return;
  try {
    const res = await post("/sheet");
    download(await res.blob(), `bcos-clip-${$("method").value}.png`);
  } catch (err) { setStatus(err.message, true); }
}

function downloadJson() {
  if (!state.last) return;
  const text = JSON.stringify(state.last, null, 1);
  download(new Blob([text], { type: "application/json" }), `bcos-clip-${state.last.method}.json`);
}

async function loadExample(name) {
  if (!name) return;
  try {
    const res = await fetch(`/examples/${encodeURIComponent(name)}`);
    if (!res.ok) throw new Error(`${res.status}: could not load example ${name}`);
    setImage(await res.blob(), name);
  } catch (err) { setStatus(err.message, true); }
}

async function init() {
  addPrompt();
  $("add-prompt").addEventListener("click", () => addPrompt().focus());
  $("explain").addEventListener("click", explain);
  $("download-sheet").addEventListener("click", downloadSheet);
  $("download-json").addEventListener("click", downloadJson);
  $("method").addEventListener("change", () => { if (state.image && prompts().length) explain(); });
  $("image-input").addEventListener("change", (ev) => {
    const file = ev.target.files[0];
    if (file) setImage(file, file.name);
  });
  $("example-select").addEventListener("change", (ev) => loadExample(ev.target.value));
  const drop = $("drop-zone");
  drop.addEventListener("dragover", (ev) => { ev.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (ev) => {
    ev.preventDefault();
    drop.classList.remove("over");
    const file = ev.dataTransfer.files[0];
    if (file) setImage(file, file.name);
  });
  try {
    const health = await (await fetch("/health")).json();
    $("model-info").textContent = health.methods.map((m) => m.label).join(" · ");
    for (const m of health.methods) {
      const opt = document.createElement("option");
      opt.value = m.name;
      opt.textContent = m.label;
      $("method").append(opt);
    }
    $("method").value = health.default_method;
    if (health.examples > 0) {
      const list = (await (await fetch("/examples")).json()).examples;
      for (const name of list) {
        const opt = document.createElement("option");
        opt.value = name;
        opt.textContent = name;
        $("example-select").append(opt);
      }
      $("examples-row").hidden = false;
    }
  } catch (err) {
    setStatus(`server not reachable: ${err.message}`, true);
  }
}

document.addEventListener("DOMContentLoaded", init);
