// imgsim map: a Plotly WebGL scatter with thumbnail-on-hover, click-to-query and lasso/box selection.
// Loaded by app.py as a Streamlit custom component (v2). Plotly.js is served by Streamlit's static
// serving from the copy that ships inside the plotly Python package (no network needed).

export default async function (component) {
  const { data, parentElement, setStateValue, setTriggerValue } = component;
  if (!window.Plotly) {
    await import(new URL("app/static/plotly.min.js", window.location.href).href);
  }
  const root = parentElement.querySelector(".imgsim-map");
  const plot = parentElement.querySelector(".imgsim-plot");
  const tip = parentElement.querySelector(".imgsim-tip");
  const preview = tip.querySelector(".imgsim-preview");
  const sprite = data.sprite;  // every preview in one image: {url, columns, cell}, or null
  if (sprite) {
    const scale = 128 / sprite.cell;
    preview.style.backgroundImage = `url("${new URL(sprite.url, window.location.href).href}")`;
    preview.style.backgroundSize = `${sprite.columns * sprite.cell * scale}px auto`;
  }
  const tipText = tip.querySelector("span");
  const base = JSON.parse(data.base);  // the collection, cached per index on the server
  plot.style.height = `${data.height}px`;
  await window.Plotly.react(plot, base.data.concat(JSON.parse(data.overlay).data || []), base.layout, {
    responsive: true,
    displaylogo: false,
    scrollZoom: true,
    modeBarButtonsToRemove: ["toImage", "autoScale2d", "resetScale2d"],
  });
  // Re-renders call this function again: replace, never stack, the handlers.
  for (const name of ["plotly_hover", "plotly_unhover", "plotly_click", "plotly_selected", "plotly_deselect"]) {
    plot.removeAllListeners(name);
  }
  const rowOf = (point) => (Array.isArray(point.customdata) ? point.customdata[0] : point.customdata);
  plot.on("plotly_hover", (ev) => {
    const row = rowOf(ev.points[0]);
    preview.style.display = sprite ? "block" : "none";
    if (sprite) {
      const size = 128;
      preview.style.backgroundPosition =
        `-${(row % sprite.columns) * size}px -${Math.floor(row / sprite.columns) * size}px`;
    }
    tipText.textContent = data.paths[row];
    const box = root.getBoundingClientRect();
    const x = ev.event.clientX - box.left, y = ev.event.clientY - box.top;
    tip.style.left = `${Math.min(x + 16, box.width - 180)}px`;
    tip.style.top = `${Math.max(y - 150, 0)}px`;
    tip.style.display = "block";
  });
  plot.on("plotly_unhover", () => { tip.style.display = "none"; });
  plot.on("plotly_click", (ev) => {
    if (ev.points && ev.points.length) setTriggerValue("clicked", rowOf(ev.points[0]));
  });
  plot.on("plotly_selected", (ev) => {
    if (!ev || !ev.points) return;
    const rows = [...new Set(ev.points.map(rowOf))].sort((a, b) => a - b);
    setStateValue("selection", rows);
  });
  plot.on("plotly_deselect", () => setStateValue("selection", []));
  root.dataset.ready = "1";
  plot.dataset.points = String(data.paths.length);
  return () => {};
}
