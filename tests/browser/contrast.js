// WCAG 2.x contrast of every visible text against what is painted behind it: background colours
// composited up the ancestors, and every colour stop of a gradient background (the worst one counts).
// Evaluated by tests/browser/test_ui.py; returns {checked, failures}.
(() => {
  // "rgb(r, g, b)" / "rgba(r, g, b, a)" → [r, g, b, a]
  const parse = s => {
    const m = s.match(/rgba?\(([^)]+)\)/);
    if (!m) return null;
    const p = m[1].split(/[ ,\/]+/).filter(Boolean).map(Number);
    return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1];
  };
  // colour `top` painted over the opaque colour `under`
  const over = (top, under) => [0, 1, 2].map(i => top[i] * top[3] + under[i] * (1 - top[3])).concat(1);
  const channel = v => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
  const lum = c => 0.2126 * channel(c[0]) + 0.7152 * channel(c[1]) + 0.0722 * channel(c[2]);
  const ratio = (a, b) => { const [x, y] = [lum(a), lum(b)].sort((p, q) => q - p); return (x + 0.05) / (y + 0.05); };
  const backdrops = el => {
    const chain = []; for (let e = el; e; e = e.parentElement) chain.push(e);
    let base = [[0, 0, 0, 1]];  // the canvas under everything is dark
    for (const e of chain.reverse()) {
      const cs = getComputedStyle(e); const bg = parse(cs.backgroundColor);
      if (bg && bg[3] > 0) base = base.map(b => over(bg, b));
      const stops = (cs.backgroundImage.match(/rgba?\([^)]+\)/g) || []).map(parse);
      if (stops.length) base = stops.flatMap(stop => base.map(b => over(stop, b)));
    }
    return base;
  };
  const failures = []; let checked = 0;
  for (const el of document.querySelectorAll("body *")) {
    if (!Array.from(el.childNodes).some(n => n.nodeType === 3 && n.textContent.trim())) continue;
    const cs = getComputedStyle(el); const box = el.getBoundingClientRect();
    if (cs.visibility === "hidden" || cs.display === "none" || box.width === 0 || box.height === 0) continue;
    if (el.closest("[disabled], [aria-hidden=true], .sr-only")) continue;
    const size = parseFloat(cs.fontSize), bold = Number(cs.fontWeight) >= 700;
    const needed = size >= 24 || (bold && size >= 18.66) ? 3 : 4.5;
    const fg = parse(cs.color);
    const worst = Math.min(...backdrops(el).map(b => ratio(over(fg, b), b)));
    checked += 1;
    if (worst < needed) {
      const name = `${el.tagName.toLowerCase()}#${el.id}.${el.className}`;
      failures.push(`${name} "${el.textContent.trim().slice(0, 30)}" ${worst.toFixed(2)} < ${needed}`);
    }
  }
  return { checked, failures };
})
