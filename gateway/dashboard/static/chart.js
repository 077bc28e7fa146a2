// Charts drawn by hand as inline SVG (no library, nothing the strict CSP refuses: presentation
// attributes and classes only, no style attribute): a bar per figure, its used part filled.

const SVG = "http://www.w3.org/2000/svg";
const WIDTH = 480;
const LABEL_WIDTH = 130;
const BAR_HEIGHT = 18;
const ROW_HEIGHT = 28;
const CAPTION_HEIGHT = 22;

function svg(name, attributes = {}) {
  const element = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, String(value));
  return element;
}

/** How full a bar is, 0 to 1 (an unlimited or zero total: empty). */
export function fraction(used, total) {
  if (!(total > 0)) return 0;
  return Math.min(1, Math.max(0, used / total));
}

/**
 * A horizontal bar chart: ``bars`` [{label, used, total, text}] (``text``: what the bar says, "3 of
 * 20 vCPUs"). The chart is one image for screen readers, named by ``title`` and listing each bar's
 * text; each bar is marked ``data-label`` and ``data-used`` (0 to 100) for styles and tests.
 */
export function barChart(title, bars) {
  const height = CAPTION_HEIGHT + Math.max(1, bars.length) * ROW_HEIGHT;
  const chart = svg("svg", {
    viewBox: `0 0 ${WIDTH} ${height}`,
    width: WIDTH,
    height,
    role: "img",
    class: "chart",
    "aria-label": `${title}: ${bars.map((bar) => `${bar.label} ${bar.text}`).join("; ") || "nothing"}`,
  });
  const heading = svg("title");
  heading.textContent = title;
  const caption = svg("text", { x: 0, y: 14, class: "chart-caption" });
  caption.textContent = title;
  chart.append(heading, caption);
  const barWidth = WIDTH - LABEL_WIDTH - 4;
  bars.forEach((bar, index) => {
    const top = CAPTION_HEIGHT + index * ROW_HEIGHT;
    const share = fraction(bar.used, bar.total);
    const group = svg("g", { "data-label": bar.label, "data-used": Math.round(share * 100) });
    const label = svg("text", { x: 0, y: top + BAR_HEIGHT - 4, class: "chart-label" });
    label.textContent = bar.label;
    const track = svg("rect", { x: LABEL_WIDTH, y: top, width: barWidth, height: BAR_HEIGHT, class: "chart-track" });
    const used = svg("rect", {
      x: LABEL_WIDTH,
      y: top,
      width: Math.round(barWidth * share),
      height: BAR_HEIGHT,
      class: share >= 0.9 ? "chart-used chart-full" : "chart-used",
    });
    const text = svg("text", { x: LABEL_WIDTH + 6, y: top + BAR_HEIGHT - 4, class: "chart-text" });
    text.textContent = bar.text;
    group.append(label, track, used, text);
    chart.append(group);
  });
  return chart;
}
