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
  const tipImg = tip.querySelector("img");
  const tipText = tip.querySelector("span");
  const fig = JSON.parse(data.figure);
  plot.style.height = `${data.height}px`;
  await window.Plotly.react(plot, fig.data, fig.layout, {
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
    const uri = data.thumbs && data.thumbs[row];
    tipImg.style.display = uri ? "block" : "none";
    if (uri) tipImg.src = uri;
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
