"use strict";
// The page of `invedge serve`: choose or drop a query image, POST it to /v1/search?k=K, show the query and
// its neighbours (thumbnails from /v1/gallery/ID/image, ids, scores) and the model/backend from /v1/info.
// Every request goes through `api()`: it turns the service's JSON errors ({"error": {"status", "message",
// "hint"}}) into one message shown in #error. A service with a token served this page only after the
// browser's login (the token as the password), and the browser sends that login with every request here.
// <body data-state> says where the page is (loading, locked, ready, searching, done, error): tests wait on it.

const $ = (id) => document.getElementById(id);
let lastFile = null; // the query shown: searched again when k changes
let searches = 0; // a newer search makes the answer of an older one stale
let objectUrls = []; // the images shown, released when the next search replaces them

class ApiError extends Error {
  constructor(status, message, hint) {
    super(message);
    this.status = status;
    this.hint = hint;
  }
}

async function api(path, options = {}) {
  const response = await fetch(path, options);
  if (!response.ok) throw await apiError(response);
  return response;
}

async function apiError(response) {
  try {
    const { message, hint } = (await response.json()).error;
    return new ApiError(response.status, message, hint);
  } catch {
    return new ApiError(response.status, `${response.status} ${response.statusText}`, "");
  }
}

function showError(error) {
  const box = $("error");
  box.replaceChildren();
  box.hidden = error === null;
  if (error === null) return;
  box.append(error.message);
  if (error.hint) {
    const hint = document.createElement("span");
    hint.className = "hint";
    hint.textContent = error.hint;
    box.append(" ", hint);
  }
}

function setState(state) {
  document.body.dataset.state = state;
}

async function loadInfo() {
  try {
    const info = await (await api("/v1/info")).json();
    $("model").textContent = describe(info);
    if (info.limits?.k_max) $("k").max = info.limits.k_max;
    showError(null);
    setState("ready");
    return true;
  } catch (error) {
    const locked = error.status === 401;
    $("model").textContent = locked ? "the service refused the login: reload the page and log in" : "service not reachable";
    showError(error);
    setState(locked ? "locked" : "error");
    return false;
  }
}

function describe(info) {
  const { model = {}, backend = {}, gallery = {} } = info;
  const facts = [model.precision, model.embedding_dim && `${model.embedding_dim}-d`];
  const size = model.image_size && `${model.image_size}×${model.image_size}`;
  return (
    `model ${model.name ?? "?"} (${[...facts, size].filter(Boolean).join(", ")}) · ` +
    `backend ${backend.name} on ${backend.device} (${backend.precision}) · gallery ${gallery.items} items`
  );
}

async function search(file) {
  const mine = ++searches;
  lastFile = file;
  releaseImages();
  showQuery(file);
  setState("searching");
  const form = new FormData();
  form.append("image", file, file.name);
  const k = encodeURIComponent($("k").value);
  try {
    const body = await (await api(`/v1/search?k=${k}`, { method: "POST", body: form })).json();
    if (mine !== searches) return;
    showError(null);
    await showNeighbours(body.results[0].neighbours, mine);
    if (mine === searches) setState("done");
  } catch (error) {
    if (mine !== searches) return;
    $("results").replaceChildren();
    showError(error);
    setState("error");
  }
}

function showQuery(file) {
  $("query").hidden = false;
  $("query-image").src = remember(URL.createObjectURL(file));
  $("query-name").textContent = file.name;
}

async function showNeighbours(neighbours, mine) {
  const items = neighbours.map(neighbourItem);
  $("results").replaceChildren(...items.map(({ item }) => item));
  // Thumbnails are fetched (not <img src>) so that a refusal is seen; a missing one stays grey.
  await Promise.allSettled(
    items.map(async ({ tile, neighbour }) => {
      if (neighbour.image === null || neighbour.image === undefined) return;
      const blob = await (await api(neighbour.image)).blob();
      if (mine !== searches) return;
      const img = document.createElement("img");
      img.src = remember(URL.createObjectURL(blob));
      img.alt = neighbour.id;
      tile.replaceChildren(img);
      tile.classList.remove("missing");
    }),
  );
}

function neighbourItem(neighbour) {
  const item = document.createElement("li");
  item.className = "neighbour";
  item.dataset.id = neighbour.id;
  item.dataset.score = String(neighbour.score);
  item.dataset.rank = String(neighbour.rank);
  const tile = document.createElement("div");
  tile.className = "tile missing";
  tile.title = neighbour.path ?? neighbour.id;
  item.append(tile, field("rank", `#${neighbour.rank}`), field("score", neighbour.score.toFixed(4)));
  item.append(field("id", neighbour.id));
  return { item, tile, neighbour };
}

function field(name, text) {
  const span = document.createElement("span");
  span.className = name;
  span.textContent = text;
  return span;
}

function remember(url) {
  objectUrls.push(url);
  return url;
}

function releaseImages() {
  objectUrls.forEach((url) => URL.revokeObjectURL(url));
  objectUrls = [];
}

function wire() {
  $("file").addEventListener("change", (event) => {
    const [file] = event.target.files;
    event.target.value = ""; // so that choosing the same file again is a change too
    if (file) search(file);
  });
  $("k").addEventListener("change", () => lastFile && search(lastFile));
  $("controls").addEventListener("submit", (event) => event.preventDefault());

  const drop = $("drop");
  // A file dropped anywhere else would make the browser leave the page to show it.
  for (const name of ["dragover", "drop"]) window.addEventListener(name, (event) => event.preventDefault());
  drop.addEventListener("dragover", () => drop.classList.add("over"));
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    drop.classList.remove("over");
    const [file] = event.dataTransfer.files;
    if (file) search(file);
  });
}

wire();
loadInfo();
