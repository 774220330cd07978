"use strict";
// The map of a gallery: every item a point of its 2-D layout on a canvas; drag pans, the wheel zooms
// (at the pointer), hovering a point shows its image and id, a click shows the item with its nearest
// neighbours (thumbnails, scores) and marks them on the map; zoomed in, points become their thumbnails.
// No network, no library: `invedge map --html` inlines this file into one page, `invedge serve` loads it.
//
// InvedgeMap.render(container, data, options) draws into `container` and returns a controller
// ({select(i), screenPoint(i), fit(), selected()}). `data`:
//   ids        [str]                  one per point
//   xy         [x0, y0, x1, y1, ...]  the layout in [0, 1]², y up
//   thumbs     [url | ""] | null      each point's image ("" or null: a grey tile)
//   groups     [int] | null           each point's entry in `legend` (-1: none)
//   legend     [{name, colour, count}] | null
//   neighbours {indices: [[int]], scores: [[float]]} | null   most similar first, -1 padding
//   locations  [str] | null           shown under the selected image
//   title, subtitle                   text above the map
// options.neighbours(i) → Promise<[{index, score}]>: where the neighbours come from when `data` has
// none (a service asks its API). options.onSelect(i): told after each selection.

const InvedgeMap = (() => {
  const POINT_RADIUS = 3.5;
  const HIT_RADIUS = 9; // px: how near the pointer a point must be to be hovered or clicked
  const THUMB_ZOOMED = 44; // px: the side of a thumbnail drawn in place of a point when zoomed in
  const MAX_DRAWN_THUMBS = 600; // thumbnails drawn on the canvas at most
  const NONE_COLOUR = "#9a9a9a";
  const SELECTED = "#d62728";
  const NEIGHBOUR = "#1f77b4";

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function thumbnail(url, alt) {
    const box = el("div", "im-tile");
    if (url) {
      const img = el("img");
      img.src = url;
      img.alt = alt;
      img.loading = "eager";
      box.append(img);
    }
    return box;
  }

  function render(container, data, options = {}) {
    const count = data.ids.length;
    const xy = data.xy;
    const thumbs = data.thumbs || [];
    const groups = data.groups || null;
    const legend = data.legend || [];
    const images = new Map(); // index → Image, loaded on first draw zoomed in
    let view = { scale: 1, dx: 0, dy: 0 }; // screen = world·scale + d (y flipped)
    let fitScale = 1; // the scale of the fitted view
    let hovered = -1;
    let chosen = -1;
    let marked = []; // neighbour indices of the chosen point
    let focusGroup = null; // a legend entry clicked: the others are faded
    let drag = null;
    let selections = 0; // a newer selection makes an older neighbour answer stale

    container.classList.add("invedge-map");
    container.replaceChildren();
    const head = el("div", "im-head");
    head.append(el("h1", "im-title", data.title || "Map"));
    if (data.subtitle) head.append(el("div", "im-subtitle", data.subtitle));
    const reset = el("button", "im-reset", "Fit");
    reset.type = "button";
    head.append(reset);
    const body = el("div", "im-body");
    const stage = el("div", "im-stage");
    const canvas = el("canvas", "im-canvas");
    const tip = el("div", "im-tip");
    tip.hidden = true;
    const overlay = el("canvas", "im-overlay"); // the rings and links: redrawn alone on hover
    stage.append(canvas, overlay, tip);
    const side = el("aside", "im-side");
    const legendBox = el("div", "im-legend");
    const panel = el("div", "im-panel");
    panel.append(el("p", "im-hint", "Click a point to see its nearest neighbours."));
    side.append(legendBox, panel);
    body.append(stage, side);
    container.append(head, body);
    const ctx = canvas.getContext("2d");
    const octx = overlay.getContext("2d");
    let pending = 0; // 1: the marks to redraw, 2: everything (at the next animation frame)

    function colourOf(i) {
      const g = groups ? groups[i] : -1;
      return g >= 0 && legend[g] ? legend[g].colour : NONE_COLOUR;
    }

    function toScreen(i) {
      return [xy[2 * i] * view.scale + view.dx, (1 - xy[2 * i + 1]) * view.scale + view.dy];
    }

    function fit() {
      const w = canvas.clientWidth;
      const h = canvas.clientHeight;
      const margin = 24;
      const scale = Math.max(10, Math.min(w, h) - 2 * margin);
      view = { scale, dx: (w - scale) / 2, dy: (h - scale) / 2 };
      fitScale = scale;
      draw();
    }

    function resize() {
      const ratio = window.devicePixelRatio || 1;
      for (const [target, context] of [
        [canvas, ctx],
        [overlay, octx],
      ]) {
        target.width = Math.round(canvas.clientWidth * ratio);
        target.height = Math.round(canvas.clientHeight * ratio);
        context.setTransform(ratio, 0, 0, ratio, 0, 0);
      }
      draw();
    }

    function thumbnailsInView() {
      // zoomed in past the fitted view: thumbnails that do not overlap (the first point of each
      // THUMB_ZOOMED-px cell of the screen that has room), the clicked item and its neighbours first
      if (view.scale < fitScale * 1.8) return [];
      const w = canvas.clientWidth;
      const h = canvas.clientHeight;
      const taken = new Map(); // cell → the place of the thumbnail put there
      const placed = new Set();
      const consider = (i) => {
        if (placed.has(i) || !thumbs[i] || (focusGroup !== null && groups && groups[i] !== focusGroup)) return;
        const [x, y] = toScreen(i);
        if (x < 0 || y < 0 || x > w || y > h) return;
        const cx = Math.floor(x / THUMB_ZOOMED);
        const cy = Math.floor(y / THUMB_ZOOMED);
        if (overlaps(taken, cx, cy, x, y)) return;
        taken.set(`${cx},${cy}`, [x, y]);
        placed.add(i);
      };
      if (chosen >= 0) [chosen, ...marked].forEach(consider);
      for (let i = 0; i < count && placed.size < MAX_DRAWN_THUMBS; i++) consider(i);
      return [...placed];
    }

    function overlaps(taken, cx, cy, x, y) {
      for (let ox = -1; ox <= 1; ox++)
        for (let oy = -1; oy <= 1; oy++) {
          const other = taken.get(`${cx + ox},${cy + oy}`);
          if (other && Math.abs(other[0] - x) < THUMB_ZOOMED && Math.abs(other[1] - y) < THUMB_ZOOMED) return true;
        }
      return false;
    }

    function image(i) {
      if (!thumbs[i]) return null;
      let img = images.get(i);
      if (!img) {
        img = new Image();
        img.onload = () => draw();
        img.src = thumbs[i];
        images.set(i, img);
      }
      return img.complete && img.naturalWidth > 0 ? img : null;
    }

    function draw(what = 2) {
      // at most one drawing per animation frame, however many events asked for one
      if (!pending) requestAnimationFrame(paint);
      pending = Math.max(pending, what);
    }

    function paint() {
      if (pending === 2) drawBase();
      pending = 0;
      drawMarks();
    }

    function drawBase() {
      const w = canvas.clientWidth;
      const h = canvas.clientHeight;
      ctx.clearRect(0, 0, w, h);
      const inView = thumbnailsInView();
      if (focusGroup !== null) {
        ctx.globalAlpha = 0.15; // the other groups, faded, under the one in focus
        drawPoints((i) => !groups || groups[i] !== focusGroup, 2.5);
        ctx.globalAlpha = 1;
      }
      drawPoints((i) => focusGroup === null || !groups || groups[i] === focusGroup, POINT_RADIUS);
      container.dataset.thumbnails = inView.filter((i) => drawThumb(i, THUMB_ZOOMED - 4, colourOf(i))).length;
    }

    function drawMarks() {
      octx.clearRect(0, 0, overlay.clientWidth, overlay.clientHeight);
      if (chosen >= 0) drawLinks();
      marked.forEach((i) => ring(i, NEIGHBOUR));
      if (chosen >= 0) ring(chosen, SELECTED);
      if (hovered >= 0) ring(hovered, "#000");
    }

    function drawPoints(keep, radius) {
      // one path per colour, filled once: a hundred thousand points stay quick to pan and zoom
      const w = canvas.clientWidth;
      const h = canvas.clientHeight;
      const paths = new Map();
      for (let i = 0; i < count; i++) {
        if (!keep(i)) continue;
        const [x, y] = toScreen(i);
        if (x < -radius || y < -radius || x > w + radius || y > h + radius) continue;
        const colour = colourOf(i);
        let path = paths.get(colour);
        if (!path) paths.set(colour, (path = new Path2D()));
        path.moveTo(x + radius, y);
        path.arc(x, y, radius, 0, 2 * Math.PI);
      }
      paths.forEach((path, colour) => {
        ctx.fillStyle = colour;
        ctx.fill(path);
      });
    }

    function drawThumb(i, side, colour) {
      const img = image(i);
      if (!img) return false;
      const [x, y] = toScreen(i);
      ctx.drawImage(img, x - side / 2, y - side / 2, side, side);
      ctx.strokeStyle = colour;
      ctx.lineWidth = 2;
      ctx.strokeRect(x - side / 2, y - side / 2, side, side);
      return true;
    }

    function ring(i, colour) {
      const [x, y] = toScreen(i);
      octx.beginPath();
      octx.arc(x, y, POINT_RADIUS + 3, 0, 2 * Math.PI);
      octx.strokeStyle = colour;
      octx.lineWidth = 2;
      octx.stroke();
    }

    function drawLinks() {
      const [x0, y0] = toScreen(chosen);
      octx.strokeStyle = "rgba(31, 119, 180, 0.6)";
      octx.lineWidth = 1;
      marked.forEach((j) => {
        const [x1, y1] = toScreen(j);
        octx.beginPath();
        octx.moveTo(x0, y0);
        octx.lineTo(x1, y1);
        octx.stroke();
      });
    }

    function pointAt(px, py) {
      let best = -1;
      let bestD = HIT_RADIUS * HIT_RADIUS;
      for (let i = 0; i < count; i++) {
        if (focusGroup !== null && groups && groups[i] !== focusGroup) continue;
        const [x, y] = toScreen(i);
        const d = (x - px) * (x - px) + (y - py) * (y - py);
        if (d <= bestD) {
          best = i;
          bestD = d;
        }
      }
      return best;
    }

    function showTip(i, px, py) {
      if (i < 0) {
        tip.hidden = true;
        return;
      }
      tip.replaceChildren(thumbnail(thumbs[i], data.ids[i]), el("div", "im-tip-id", data.ids[i]));
      const g = groups ? groups[i] : -1;
      if (g >= 0 && legend[g]) tip.append(el("div", "im-tip-group", legend[g].name));
      tip.dataset.id = data.ids[i];
      tip.hidden = false;
      const left = px + 16 + tip.offsetWidth > canvas.clientWidth ? px - 16 - tip.offsetWidth : px + 16;
      tip.style.left = `${Math.max(0, left)}px`;
      tip.style.top = `${Math.max(0, Math.min(py + 12, canvas.clientHeight - tip.offsetHeight))}px`;
    }

    async function neighboursOf(i) {
      if (data.neighbours) {
        const found = [];
        data.neighbours.indices[i].forEach((j, n) => {
          if (j >= 0) found.push({ index: j, score: data.neighbours.scores[i][n] });
        });
        return found;
      }
      return options.neighbours ? options.neighbours(i) : [];
    }

    async function select(i) {
      const mine = ++selections;
      chosen = i;
      marked = [];
      container.dataset.selected = data.ids[i];
      container.dataset.state = "loading";
      showSelected(i, null);
      draw();
      let found;
      try {
        found = await neighboursOf(i);
      } catch (error) {
        if (mine === selections) showSelected(i, error);
        container.dataset.state = "error";
        return;
      }
      if (mine !== selections) return;
      marked = found.map((n) => n.index);
      showSelected(i, found);
      draw();
      container.dataset.state = "shown";
      if (options.onSelect) options.onSelect(i);
    }

    function showSelected(i, found) {
      const head = el("div", "im-chosen");
      head.append(thumbnail(thumbs[i], data.ids[i]));
      const facts = el("div", "im-chosen-facts");
      facts.append(el("div", "im-chosen-id", data.ids[i]));
      const g = groups ? groups[i] : -1;
      if (g >= 0 && legend[g]) facts.append(el("div", "im-chosen-group", legend[g].name));
      if (data.locations && data.locations[i]) facts.append(el("div", "im-chosen-location", data.locations[i]));
      head.append(facts);
      const list = el("ol", "im-neighbours");
      if (found instanceof Error) list.append(el("li", "im-error", found.message));
      else if (found === null) list.append(el("li", "im-hint", "finding neighbours…"));
      else if (!found.length) list.append(el("li", "im-hint", "no neighbours"));
      else
        found.forEach(({ index, score }) => {
          const item = el("li", "neighbour");
          item.dataset.id = data.ids[index];
          item.dataset.index = index;
          item.dataset.score = score;
          item.title = data.ids[index];
          item.append(thumbnail(thumbs[index], data.ids[index]));
          item.append(el("span", "score", Number(score).toFixed(3)));
          item.append(el("span", "im-neighbour-id", data.ids[index]));
          item.addEventListener("click", () => select(index));
          list.append(item);
        });
      panel.replaceChildren(head, el("h2", "im-neighbours-title", "Nearest neighbours"), list);
    }

    function showLegend() {
      legendBox.replaceChildren();
      if (!legend.length) return;
      legend.forEach((entry, g) => {
        const row = el("button", "im-legend-entry");
        row.type = "button";
        const swatch = el("span", "im-swatch");
        swatch.style.background = entry.colour;
        row.append(swatch, el("span", "im-legend-name", entry.name));
        if (entry.count !== undefined) row.append(el("span", "im-legend-count", String(entry.count)));
        row.addEventListener("click", () => {
          focusGroup = focusGroup === g ? null : g;
          legendBox.querySelectorAll(".im-legend-entry").forEach((b, n) => b.classList.toggle("im-faded", focusGroup !== null && n !== focusGroup));
          draw();
        });
        legendBox.append(row);
      });
    }

    function pointer(event) {
      const box = canvas.getBoundingClientRect();
      return [event.clientX - box.left, event.clientY - box.top];
    }

    canvas.addEventListener("mousedown", (event) => {
      const [x, y] = pointer(event);
      drag = { x, y, dx: view.dx, dy: view.dy, moved: false };
    });
    window.addEventListener("mouseup", (event) => {
      if (!drag) return;
      const wasClick = !drag.moved && event.target === canvas;
      drag = null;
      canvas.classList.remove("im-dragging");
      if (!wasClick) return;
      const [x, y] = pointer(event);
      const i = pointAt(x, y);
      if (i >= 0) select(i);
    });
    canvas.addEventListener("mousemove", (event) => {
      const [x, y] = pointer(event);
      if (drag) {
        if (Math.abs(x - drag.x) + Math.abs(y - drag.y) > 3) drag.moved = true;
        if (drag.moved) {
          canvas.classList.add("im-dragging");
          view.dx = drag.dx + x - drag.x;
          view.dy = drag.dy + y - drag.y;
          showTip(-1);
          draw();
        }
        return;
      }
      const i = pointAt(x, y);
      if (i !== hovered) {
        hovered = i;
        draw(1);
      }
      showTip(i, x, y);
    });
    canvas.addEventListener("mouseleave", () => {
      hovered = -1;
      showTip(-1);
      draw(1);
    });
    canvas.addEventListener(
      "wheel",
      (event) => {
        event.preventDefault();
        const [x, y] = pointer(event);
        const factor = Math.exp(-event.deltaY * 0.0015);
        const scale = Math.min(Math.max(view.scale * factor, 20), 200000);
        const k = scale / view.scale;
        view = { scale, dx: x - (x - view.dx) * k, dy: y - (y - view.dy) * k };
        draw();
      },
      { passive: false },
    );
    reset.addEventListener("click", fit);
    window.addEventListener("resize", () => {
      resize();
      fit();
    });

    showLegend();
    resize();
    fit();
    container.dataset.state = "ready";
    return {
      select,
      fit,
      selected: () => chosen,
      screenPoint(i) {
        const [x, y] = toScreen(i);
        const box = canvas.getBoundingClientRect();
        return { x: x + box.left, y: y + box.top };
      },
    };
  }

  return { render };
})();

if (typeof window !== "undefined") window.InvedgeMap = InvedgeMap;
