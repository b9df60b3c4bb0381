// The search page: plain JS, no build step. Every action is one fetch to the JSON API (see /docs).
"use strict";
const $ = (id) => document.getElementById(id);
const chosen = { classify: null, describe: null };  // {file} or {id, thumb} per panel
let active = "classify";
let offset = 0;

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v; else if (k === "text") node.textContent = v; else node.setAttribute(k, v);
  }
  node.append(...children);
  return node;
}

async function api(path, options) {
  const response = await fetch(path, options);
  const body = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
  if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
  return body;
}

function showError(target, error) {
  target.replaceChildren(el("p", { class: "error", role: "alert", text: error.message }));
}

// Tabs: click, or arrow keys when a tab has focus (the WAI-ARIA tabs pattern).
const tabs = ["classify", "search", "describe"];
function selectTab(name, focus) {
  active = name;
  for (const t of tabs) {
    const tab = $(`tab-${t}`), on = t === name;
    tab.setAttribute("aria-selected", on);
    tab.tabIndex = on ? 0 : -1;
    $(`panel-${t}`).hidden = !on;
  }
  $("chooser").hidden = name === "search";
  if (focus) $(`tab-${name}`).focus();
  if (name === "search") $("query").focus();
}
for (const t of tabs) {
  $(`tab-${t}`).addEventListener("click", () => selectTab(t));
  $(`tab-${t}`).addEventListener("keydown", (e) => {
    const i = tabs.indexOf(t);
    if (e.key === "ArrowRight") selectTab(tabs[(i + 1) % tabs.length], true);
    if (e.key === "ArrowLeft") selectTab(tabs[(i + tabs.length - 1) % tabs.length], true);
  });
}

// Image input: a drop zone that is also a keyboard button opening the file picker.
function setImage(panel, choice) {
  chosen[panel] = choice;
  const img = $(`preview-${panel}`);
  img.src = choice.file ? URL.createObjectURL(choice.file) : choice.thumb;
  img.alt = choice.file ? choice.file.name : choice.path;
  img.hidden = false;
  document.querySelectorAll("#grid-choose .tile").forEach((t) => t.classList.toggle("chosen", choice.id !== undefined && +t.dataset.id === choice.id));
  if (panel === "describe") describe();
  else if (panel === "classify") classify();
}
for (const panel of ["classify", "describe"]) {
  const drop = $(`drop-${panel}`), input = $(`file-${panel}`);
  drop.addEventListener("click", () => input.click());
  drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); input.click(); } });
  input.addEventListener("change", () => input.files[0] && setImage(panel, { file: input.files[0] }));
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault(); drop.classList.remove("over");
    if (e.dataTransfer.files[0]) setImage(panel, { file: e.dataTransfer.files[0] });
  });
}

function imageForm(panel) {
  const form = new FormData();
  const choice = chosen[panel];
  if (!choice) throw new Error("Choose an image first: upload one, or pick one from the index.");
  if (choice.file) form.append("image", choice.file); else form.append("image_id", choice.id);
  return form;
}

// (1) Zero-shot classification, shown as a probability bar chart.
async function classify() {
  const out = $("result-classify"), button = $("go-classify");
  try {
    const form = imageForm("classify");
    form.append("labels", $("labels").value);
    button.disabled = true;
    const body = await api("/api/classify", { method: "POST", body: form });
    const bars = el("div", { class: "bars", role: "list", "aria-label": "label probabilities" });
    body.labels.forEach((row, i) => {
      const pct = (100 * row.probability).toFixed(1);
      const bar = el("div", { class: "bar" });
      bar.style.width = `${Math.max(0.5, 100 * row.probability)}%`;
      bars.append(el("span", { class: i === 0 ? "top" : "", text: row.label, role: "listitem" }),
                  el("div", { class: "bar-track", "aria-hidden": "true" }, bar),
                  el("span", { class: "pct", text: `${pct}%` }));
    });
    // A sigmoid-trained model scores each label on its own: say so beside the numbers, which need not add up.
    const meaning = body.scores === "sigmoid"
      ? "Each label scored on its own (sigmoid): the chance it matches; scores do not add up to 100%."
      : "Shares of 100% across your labels (softmax).";
    out.replaceChildren(el("p", { class: "muted small", id: "scores-meaning", text: meaning }), bars,
                        el("p", { class: "muted small", text: `${body.labels.length} labels · ${body.ms} ms` }));
  } catch (error) { showError(out, error); } finally { button.disabled = false; }
}
$("form-classify").addEventListener("submit", (e) => { e.preventDefault(); classify(); });
$("labels").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); classify(); }
});

function tile(hit, caption, onPick) {
  const button = el("button", { type: "button", class: "tile", "data-id": hit.id, title: hit.path },
    el("img", { src: hit.thumb, alt: hit.path, loading: "lazy" }), el("span", { text: caption }));
  button.addEventListener("click", () => onPick(hit));
  return button;
}

// (2) Text -> top-k images as a grid.
$("form-search").addEventListener("submit", async (e) => {
  e.preventDefault();
  const query = $("query").value.trim(), grid = $("grid-search"), status = $("status-search");
  if (!query) return;
  try {
    const body = await api("/api/search", { method: "POST", headers: { "Content-Type": "application/json" },
                                            body: JSON.stringify({ query, k: 24 }) });
    status.textContent = `${body.results.length} images for “${body.query}” · ${body.ms} ms`;
    grid.replaceChildren(...body.results.map((hit) => tile(hit, `${hit.score.toFixed(3)} · ${hit.path}`, (h) => {
      selectTab("describe"); setImage("describe", h);
    })));
  } catch (error) { showError(grid, error); status.textContent = ""; }
});

// (3) Image -> nearest labels and nearest images.
async function describe() {
  const out = $("result-describe"), grid = $("grid-describe");
  try {
    const body = await api("/api/neighbors", { method: "POST", body: imageForm("describe") });
    const list = el("ol", { class: "bars", "aria-label": "nearest labels" });
    const best = Math.max(...body.labels.map((l) => l.score), 1e-6);
    for (const row of body.labels) {
      const bar = el("div", { class: "bar" });
      bar.style.width = `${Math.max(1, 100 * Math.max(0, row.score) / best)}%`;
      list.append(el("span", { text: row.label }), el("div", { class: "bar-track", "aria-hidden": "true" }, bar),
                  el("span", { class: "pct", text: row.score.toFixed(3) }));
    }
    out.replaceChildren(el("h2", { text: "Nearest labels (cosine)" }), list);
    grid.replaceChildren(...body.images.map((hit) => tile(hit, `${hit.score.toFixed(3)} · ${hit.path}`, (h) => setImage("describe", h))));
  } catch (error) { showError(out, error); }
}

// The chooser: indexed images to click instead of uploading.
async function loadMore() {
  try {
    const page = await api(`/api/images?offset=${offset}&limit=36`);
    offset += page.length;
    $("grid-choose").append(...page.map((hit) => tile(hit, hit.path.split("/").pop(), (h) => setImage(active, h))));
    $("more").hidden = page.length < 36;
  } catch (error) { $("chooser").hidden = true; }
}
$("more").addEventListener("click", loadMore);

api("/api/info").then((info) => {
  $("info").textContent = `${info.setting} · ${info.image_tower} + ${info.text_tower} · ${info.images.toLocaleString()} images indexed`;
  if (info.images) loadMore(); else $("chooser").hidden = true;
}).catch((error) => { $("info").textContent = `server unreachable: ${error.message}`; });
