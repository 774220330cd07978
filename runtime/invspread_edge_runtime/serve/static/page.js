"use strict";
// The page of `invedge serve`: choose or drop a query image, POST it to /v1/search?k=K, show the query and
// its neighbours (thumbnails from /v1/gallery/ID/image, ids, scores) and the model/backend from /v1/info.
// Every request goes through `api()`: it turns the service's JSON errors ({"error": {"status", "message",
// "hint"}}) into one message shown in #error. A service with a token served this page only after the
// browser's login (the token as the password), and the browser sends that login with every request here.
// <body data-state> says where the page is (loading, locked, ready, searching, done, error): tests wait on it.
// With --watch, the live matches are shown below the neighbours (pollWatch, at the end).

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

// The --watch source (GET /v1/watch): polled every WATCH_POLL_MS for the matches after the last one
// shown; the newest first, at most WATCH_SHOWN of them. A service without --watch answers 404: the
// section stays hidden and polling stops.
const WATCH_POLL_MS = 1000;
const WATCH_SHOWN = 50;
let lastMatch = 0;

async function pollWatch() {
  let body;
  try {
    body = await (await api(`/v1/watch?after=${lastMatch}`)).json();
  } catch (error) {
    if (error.status === 404) return; // no --watch: nothing to show
    $("watch-status").textContent = `watch: ${error.message}`;
    setTimeout(pollWatch, WATCH_POLL_MS);
    return;
  }
  $("watch").hidden = false;
  $("watch").dataset.status = body.status;
  $("watch-status").textContent = watchLine(body);
  const list = $("matches");
  for (const match of body.recent) {
    list.prepend(matchItem(match));
    lastMatch = Math.max(lastMatch, match.seq);
  }
  while (list.children.length > WATCH_SHOWN) {
    const img = list.lastElementChild.querySelector("img");
    if (img) URL.revokeObjectURL(img.src);
    list.lastElementChild.remove();
  }
  if (!["ended", "failed", "stopped"].includes(body.status)) setTimeout(pollWatch, WATCH_POLL_MS);
}

function watchLine(body) {
  const how = body.decoder ? ` (${body.decoder})` : "";
  const error = body.error ? `: ${body.error}` : "";
  return (
    `${body.source}${how} · ${body.status}${error} · ${body.frames} frames, ${body.matches} matches, ` +
    `${body.dropped} dropped, ${body.reconnects} reconnects · threshold ${body.threshold}`
  );
}

function matchItem(match) {
  const item = document.createElement("li");
  item.className = "match";
  item.dataset.id = match.id;
  item.dataset.time = match.at;
  item.dataset.score = String(match.score);
  const tile = document.createElement("div");
  tile.className = "tile missing";
  tile.title = match.path ?? match.id;
  item.append(tile, field("time", match.at), field("score", match.score.toFixed(4)));
  item.append(field("id", match.id), field("frame", `frame ${match.frame} of ${match.source}`));
  if (match.image) {
    api(match.image)
      .then((response) => response.blob())
      .then((blob) => {
        const img = document.createElement("img");
        img.src = URL.createObjectURL(blob); // released when the match leaves the list
        img.alt = match.id;
        tile.replaceChildren(img);
        tile.classList.remove("missing");
      })
      .catch(() => {}); // a thumbnail that cannot be read stays grey
  }
  return item;
}

wire();
loadInfo().then((ready) => ready && pollWatch());
