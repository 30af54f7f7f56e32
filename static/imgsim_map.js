// imgsim map: a Plotly WebGL scatter with thumbnail-on-hover, click-to-query and lasso/box selection.
// Loaded with static/imgsim_map.html by dashboard/cached.py as a Streamlit custom component (v2). Plotly.js is
// served by Streamlit's static serving from the copy that ships inside the plotly Python package (no network).

const DIMMED = 0.12;  // the opacity of a point outside the filter

export default async function (component) {
  const { data, parentElement, setStateValue, setTriggerValue } = component;
  const plotlyUrl = new URL("app/static/plotly.min.js", window.location.href).href;
  if (data.preload) {  // a placeholder that only starts the download; the map that replaces it awaits it
    if (!window.Plotly) import(plotlyUrl);
    return () => {};
  }
  performance.mark("imgsim-map-mount");  // read by bench/app_scale.py
  if (!window.Plotly) {
    await import(plotlyUrl);
  }
  performance.mark("imgsim-plotly-ready");
  const root = parentElement.querySelector(".imgsim-map");
  const plot = parentElement.querySelector(".imgsim-plot");
  const tip = parentElement.querySelector(".imgsim-tip");
  const preview = tip.querySelector(".imgsim-preview");
  // Previews of the drawn points, in sprite-sheet tiles: {urls, per_tile, columns, cell}, or null.
  // A tile is fetched by the browser the first time one of its points is hovered.
  const sprite = data.sprite;
  if (sprite) {
    const scale = 128 / sprite.cell;
    preview.style.backgroundSize = `${sprite.columns * sprite.cell * scale}px auto`;
  }
  const tipText = tip.querySelector("span");
  const base = JSON.parse(data.base);  // the collection, cached per index on the server
  performance.mark("imgsim-map-parsed");
  plot.style.height = `${data.height}px`;
  // Points a filter leaves out stay on the map, faint: each point's opacity, by its row.
  const dimmed = new Set(data.dimmed || []);
  for (const trace of base.data) {
    if (trace.type !== "scattergl" || !trace.customdata || !trace.marker) continue;
    const full = typeof trace.marker.opacity === "number" ? trace.marker.opacity : 1;
    trace.marker.opacity = dimmed.size
      ? trace.customdata.map((r) => (dimmed.has(Array.isArray(r) ? r[0] : r) ? DIMMED : full)) : full;
  }
  // The config comes from imgsim.serving.charts.plotly_config, as every chart's does (no outside services).
  await window.Plotly.react(plot, base.data.concat(JSON.parse(data.overlay).data || []), base.layout, data.config);
  // Re-renders call this function again: replace, never stack, the handlers.
  for (const name of ["plotly_hover", "plotly_unhover", "plotly_click", "plotly_selected", "plotly_deselect"]) {
    plot.removeAllListeners(name);
  }
  const rowOf = (point) => (Array.isArray(point.customdata) ? point.customdata[0] : point.customdata);
  // Position of each drawn row in the drawn order (= its place in the preview tiles).
  const position = new Map();
  for (const trace of base.data) {
    if (trace.type !== "scattergl" || !trace.customdata) continue;
    for (const row of trace.customdata) position.set(Array.isArray(row) ? row[0] : row, position.size);
  }
  const ordered = [...position.keys()].sort((a, b) => a - b);
  // A collection drawn whole has every row's preview at its row; a sample has them in the sample's order.
  ordered.forEach((row, i) => position.set(row, data.row_positions ? row : i));
  plot.on("plotly_hover", (ev) => {
    const point = ev.points[0];
    const row = rowOf(point);
    if (row === undefined) return;  // the density layer
    const pos = position.has(row) ? position.get(row) : -1;
    preview.style.display = sprite && pos >= 0 ? "block" : "none";
    if (sprite && pos >= 0) {
      const size = 128, cell = pos % sprite.per_tile;
      const url = new URL(sprite.urls[Math.floor(pos / sprite.per_tile)], window.location.href).href;
      preview.style.backgroundImage = `url("${url}")`;
      preview.style.backgroundPosition =
        `-${(cell % sprite.columns) * size}px -${Math.floor(cell / sprite.columns) * size}px`;
    }
    tipText.textContent = point.hovertext || data.paths[row] || point.text || "";
    const box = root.getBoundingClientRect();
    const x = ev.event.clientX - box.left, y = ev.event.clientY - box.top;
    tip.style.left = `${Math.min(x + 16, box.width - 180)}px`;
    tip.style.top = `${Math.max(y - 150, 0)}px`;
    tip.style.display = "block";
  });
  plot.on("plotly_unhover", () => { tip.style.display = "none"; });
  plot.on("plotly_click", (ev) => {
    const row = ev.points && ev.points.length ? rowOf(ev.points[0]) : undefined;
    // With the generation drawn: after a re-index the same row number can be another image.
    if (row !== undefined) setTriggerValue("clicked", [data.generation, row]);
  });
  plot.on("plotly_selected", (ev) => {
    if (!ev || !ev.points) return;
    const rows = [...new Set(ev.points.map(rowOf).filter((r) => r !== undefined))].sort((a, b) => a - b);
    setStateValue("selection", { generation: data.generation, rows });
  });
  plot.on("plotly_deselect", () => setStateValue("selection", { generation: data.generation, rows: [] }));
  performance.mark("imgsim-map-drawn");
  root.dataset.ready = "1";
  plot.dataset.points = String(data.points !== undefined ? data.points : data.paths.length);
  return () => {};
}
