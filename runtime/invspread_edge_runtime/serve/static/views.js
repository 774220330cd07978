"use strict";
// The page's Map and Duplicates views (after page.js: its `$`, `api` and `field` are used here).
// Map: GET /v1/map (the gallery's 2-D layout, colours and image URLs) drawn by the map script of
// `invedge map` (explore/static/map.js); a clicked point's neighbours come from /v1/map/neighbours.
// Duplicates: GET /v1/duplicates?threshold=F, each group a row of tiles, the kept item first.
// The view shown follows the address's #search, #map (#map/pca: that layout) or #duplicates. Each view's section carries
// data-state (loading, ready/done, error) for tests; the map's own container says "shown" after a click.

const VIEWS = ["search", "map", "duplicates"];
const MAP_NEIGHBOURS = 8;
const BUSY_RETRY_MS = 2000; // the server computes one view at a time: a 503 means ask again shortly
const BUSY_RETRIES = 150; // about five minutes of asking
let mapMethod = null; // the layout method of the map drawn (its first load: once per method)
let duplicateAsks = 0; // a newer request makes the answer of an older one stale

function viewOf(hash) {
  const name = hash.replace(/^#/, "").split("/")[0];
  return VIEWS.includes(name) ? name : "search";
}

function methodOf(hash) {
  return hash.split("/")[1] || "auto"; // #map/pca: the layout asked for
}

function showView(name, method = "auto") {
  for (const view of VIEWS) {
    $(`${view}-view`).hidden = view !== name;
    const link = document.querySelector(`#views [data-view="${view}"]`);
    if (view === name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  document.body.classList.toggle("wide", name !== "search");
  if (name === "map" && mapMethod !== method) {
    mapMethod = method;
    $("map-method").value = method;
    loadMap(method);
  }
  if (name === "duplicates" && !$("duplicates-view").dataset.state) loadDuplicates();
}

function viewStatus(view, state, text, error = null) {
  const section = $(`${view}-view`);
  section.dataset.state = state;
  const status = section.querySelector(".view-status");
  status.replaceChildren(text);
  status.classList.toggle("failed", error !== null);
  if (error?.hint) {
    const hint = document.createElement("span");
    hint.className = "hint";
    hint.textContent = error.hint;
    status.append(" ", hint);
  }
}

// GET `path`; while the server answers 503 (busy with another view), say so and ask again.
async function viewApi(view, path, waiting) {
  for (let attempt = 0; ; attempt++) {
    try {
      return await api(path);
    } catch (error) {
      if (error.status !== 503 || attempt >= BUSY_RETRIES) throw error;
      viewStatus(view, "loading", `${waiting} (the server is busy with another view: waiting)…`);
      await new Promise((resolve) => setTimeout(resolve, BUSY_RETRY_MS));
    }
  }
}

async function loadMap(method) {
  viewStatus("map", "loading", "computing the map of the gallery (the first time takes a while)…");
  try {
    const path = `/v1/map?method=${encodeURIComponent(method)}`;
    const data = await (await viewApi("map", path, "computing the map of the gallery")).json();
    if (method !== mapMethod) return; // another layout was asked for meanwhile
    const neighbours = async (i) => {
      const query = `item=${i}&k=${MAP_NEIGHBOURS}&checksum=${encodeURIComponent(data.checksum)}`;
      const body = await (await api(`/v1/map/neighbours?${query}`)).json();
      return body.neighbours.map(({ index, score }) => ({ index, score }));
    };
    window.invedgeServeMap = InvedgeMap.render($("map"), data, { neighbours });
    const cached = data.layout.from_cache ? " (from the cache)" : "";
    viewStatus("map", "ready", `${data.count} items, ${data.layout.method} layout${cached}`);
  } catch (error) {
    viewStatus("map", "error", error.message, error);
  }
}

async function loadDuplicates() {
  const mine = ++duplicateAsks;
  const threshold = $("threshold").value;
  viewStatus("duplicates", "loading", `finding near-duplicates from cosine ${threshold}…`);
  try {
    const path = `/v1/duplicates?threshold=${encodeURIComponent(threshold)}`;
    const body = await (await viewApi("duplicates", path, `finding near-duplicates from cosine ${threshold}`)).json();
    if (mine !== duplicateAsks) return;
    $("groups").replaceChildren(...body.groups.map(groupItem));
    viewStatus("duplicates", "done", duplicateLine(body));
  } catch (error) {
    if (mine !== duplicateAsks) return;
    $("groups").replaceChildren();
    viewStatus("duplicates", "error", error.message, error);
  }
}

function duplicateLine(body) {
  const groups = body.groups.length;
  if (!groups) return `no near-duplicates from cosine ${body.threshold}`;
  const members = body.groups.reduce((sum, group) => sum + group.members.length, 0);
  return `${groups} groups of near-duplicates (${members} items) from cosine ${body.threshold}; the kept item first`;
}

function groupItem(group) {
  const item = document.createElement("li");
  item.className = "group";
  item.dataset.keep = group.keep;
  const tiles = document.createElement("ol");
  tiles.className = "members";
  const kept = group.members.filter((m) => m.id === group.keep);
  for (const member of [...kept, ...group.members.filter((m) => m.id !== group.keep)]) {
    tiles.append(memberItem(member, member.id === group.keep));
  }
  item.append(tiles);
  return item;
}

function memberItem(member, kept) {
  const item = document.createElement("li");
  item.className = kept ? "member kept" : "member";
  item.dataset.id = member.id;
  const tile = document.createElement("div");
  tile.className = member.image ? "tile" : "tile missing";
  tile.title = member.id;
  if (member.image) {
    const img = document.createElement("img");
    img.src = member.image; // same origin: the browser sends the login with it
    img.alt = member.id;
    tile.append(img);
  }
  const score = typeof member.score === "number" ? member.score.toFixed(4) : "";
  item.append(tile, field("id", member.id), field("score", kept ? "kept" : score));
  return item;
}

function wireViews() {
  window.addEventListener("hashchange", () => showView(viewOf(location.hash), methodOf(location.hash)));
  $("map-method").addEventListener("change", (event) => {
    location.hash = `#map/${event.target.value}`;
  });
  $("duplicate-controls").addEventListener("submit", (event) => {
    event.preventDefault();
    loadDuplicates();
  });
  showView(viewOf(location.hash), methodOf(location.hash));
}

wireViews();
