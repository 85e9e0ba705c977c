// Atrium charts: the market SVG chart and an HR hires-by-quarter heatmap, read with the
// visitor's API key. No framework, no CDN, no innerHTML: every value from the API is placed
// with textContent or as an attribute, so data can never become markup.
"use strict";

const KEY_STORE = "atrium.apiKey";
const SVG_NS = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);

function storedKey() {
  return sessionStorage.getItem(KEY_STORE);
}

// A key may come in the fragment (#key=atr_…, for bookmarks and automation): fragments never
// reach the server. It is moved to session storage and removed from the address bar at once.
function keyFromFragment() {
  const params = new URLSearchParams(location.hash.slice(1));
  const key = params.get("key");
  if (key) {
    sessionStorage.setItem(KEY_STORE, key.trim());
    params.delete("key");
    const rest = params.toString();
    history.replaceState(null, "", location.pathname + location.search + (rest ? "#" + rest : ""));
  }
}

async function problemText(response) {
  try {
    const body = await response.json();
    return body.detail || body.title || (body.info && body.info.error) || `HTTP ${response.status}`;
  } catch (error) {
    return `HTTP ${response.status}`;
  }
}

async function apiGet(path, params) {
  const url = new URL(path, location.origin);
  for (const [name, value] of Object.entries(params)) {
    if (value) url.searchParams.set(name, value);
  }
  const response = await fetch(url, { headers: { "X-API-KEY": storedKey() } });
  if (response.status === 401) {
    forgetKey("The server does not know that API key: enter another one.");
    throw new Error("API key refused");
  }
  if (!response.ok) throw new Error(await problemText(response));
  return response;
}

function showError(id, error) {
  const box = $(id);
  box.textContent = error ? String(error.message || error) : "";
  box.hidden = !error;
}

let chartUrl = null;

async function drawChart(event) {
  if (event) event.preventDefault();
  const image = $("chart");
  try {
    const response = await apiGet("/api/financial_data/chart.svg", {
      symbol: $("symbol").value.trim(),
      start_date: $("start").value,
      end_date: $("end").value,
    });
    const blob = await response.blob();
    if (chartUrl) URL.revokeObjectURL(chartUrl);
    chartUrl = URL.createObjectURL(blob); // an <img> never runs scripts of an SVG
    image.src = chartUrl;
    image.hidden = false;
    showError("market-error", null);
  } catch (error) {
    image.hidden = true;
    showError("market-error", error);
  }
}

function svg(name, attributes, text) {
  const node = document.createElementNS(SVG_NS, name);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, String(value));
  if (text !== undefined) node.textContent = String(text);
  return node;
}

// Light to dark orange: easy to tell from the chart's blue, readable in greyscale too.
function heat(value, max) {
  if (!value) return "#f3f4f6";
  const t = Math.sqrt(value / max);
  const from = [255, 237, 213];
  const to = [194, 65, 12];
  const rgb = from.map((c, i) => Math.round(c + (to[i] - c) * t));
  return `rgb(${rgb.join(",")})`;
}

function renderHeatmap(rows, year) {
  const quarters = ["Q1", "Q2", "Q3", "Q4"];
  const byDepartment = new Map();
  for (const row of rows) {
    const sums = byDepartment.get(row.department) || [0, 0, 0, 0];
    quarters.forEach((q, i) => { sums[i] += row[q]; });
    byDepartment.set(row.department, sums);
  }
  const departments = [...byDepartment.keys()].sort();
  const max = Math.max(1, ...[...byDepartment.values()].flat());
  const [labelWidth, cellWidth, cellHeight, top] = [200, 72, 28, 28];
  const width = labelWidth + cellWidth * (quarters.length + 1) + 8;
  const height = top + cellHeight * departments.length + 8;
  const root = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img" });
  root.appendChild(svg("title", {}, `Hires by department and quarter, ${year}`));
  [...quarters, "year"].forEach((label, i) => {
    root.appendChild(svg("text", {
      x: labelWidth + cellWidth * i + cellWidth / 2, y: top - 10, "text-anchor": "middle",
      fill: "#374151", "font-weight": 600,
    }, label));
  });
  departments.forEach((department, r) => {
    const y = top + r * cellHeight;
    const sums = byDepartment.get(department);
    root.appendChild(svg("text", { x: labelWidth - 10, y: y + 18, "text-anchor": "end", fill: "#374151" },
      department));
    sums.forEach((value, c) => {
      const x = labelWidth + c * cellWidth;
      const cell = svg("rect", {
        x: x + 1, y: y + 1, width: cellWidth - 2, height: cellHeight - 2, rx: 3,
        fill: heat(value, max), "data-hires": value,
      });
      cell.appendChild(svg("title", {}, `${department}, ${quarters[c]} ${year}: ${value} hires`));
      root.appendChild(cell);
      root.appendChild(svg("text", {
        x: x + cellWidth / 2, y: y + 18, "text-anchor": "middle",
        fill: value / max > 0.45 ? "#ffffff" : "#1f2937",
      }, value));
    });
    const total = sums.reduce((a, b) => a + b, 0);
    root.appendChild(svg("text", {
      x: labelWidth + 4 * cellWidth + cellWidth / 2, y: y + 18, "text-anchor": "middle",
      fill: "#374151", "font-weight": 600,
    }, total));
  });
  return root;
}

async function drawHeatmap(event) {
  if (event) event.preventDefault();
  const box = $("heatmap");
  const year = $("year").value;
  try {
    const response = await apiGet("/hr/reports/hires-by-quarter", { year });
    const rows = await response.json();
    box.replaceChildren(rows.length
      ? renderHeatmap(rows, year)
      : Object.assign(document.createElement("p"), { textContent: `No hires in ${year}.` }));
    showError("hr-error", null);
  } catch (error) {
    box.replaceChildren();
    showError("hr-error", error);
  }
}

function forgetKey(message) {
  sessionStorage.removeItem(KEY_STORE);
  showError("key-error", message || null);
  show();
}

function show() {
  const key = storedKey();
  $("key-section").hidden = Boolean(key);
  $("market").hidden = !key;
  $("hr").hidden = !key;
  $("who").hidden = !key;
  if (!key) {
    $("key").focus();
    return;
  }
  $("key-tail").textContent = key.slice(-4);
  drawChart();
  drawHeatmap();
}

document.addEventListener("DOMContentLoaded", () => {
  keyFromFragment();
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY_STORE, $("key").value.trim());
    $("key").value = "";
    showError("key-error", null);
    show();
  });
  $("forget").addEventListener("click", () => forgetKey());
  $("market-form").addEventListener("submit", drawChart);
  $("hr-form").addEventListener("submit", drawHeatmap);
  show();
});
