/** Hand-written SVG line charts: nice ticks, axes, labels, legend; no chart library. */

export interface Series {
  name: string;
  /** [x, y] points; sorted by x when drawn. */
  points: [number, number][];
}

export interface LineChartOptions {
  title: string;
  xLabel: string;
  yLabel: string;
  series: Series[];
  /** 'log' places x on a log scale (only positive x); 'auto' picks log when x spans 10× or more. */
  xScale?: 'linear' | 'log' | 'auto';
  /** Label x ticks at exactly these values instead of nice ticks (e.g. the agent counts run). */
  xTicksAt?: number[];
  width?: number;
  height?: number;
  /** Draw a marker at every point (default true). */
  markers?: boolean;
}

/** Colour-blind-safe palette (Okabe-Ito), then greys. */
const PALETTE = ['#0072B2', '#D55E00', '#009E73', '#CC79A7', '#E69F00', '#56B4E9', '#000000', '#999999'];

/**
 * Around `count` evenly spaced round numbers (1, 2, 2.5, 5 × 10^k) covering [min, max]; the
 * returned range is widened to the outer ticks.
 */
export function niceTicks(
  min: number,
  max: number,
  count = 5,
): { ticks: number[]; min: number; max: number } {
  if (!Number.isFinite(min) || !Number.isFinite(max)) return { ticks: [0, 1], min: 0, max: 1 };
  if (max < min) [min, max] = [max, min];
  if (max === min) {
    const pad = min === 0 ? 1 : Math.abs(min) * 0.1;
    min -= pad;
    max += pad;
  }
  const step = niceStep((max - min) / Math.max(1, count));
  const lo = Math.floor(min / step + 1e-9) * step;
  const hi = Math.ceil(max / step - 1e-9) * step;
  const ticks: number[] = [];
  for (let v = lo, i = 0; v <= hi + step * 1e-6 && i < 100; v += step, i++) ticks.push(cleanFloat(v));
  return { ticks, min: lo, max: hi };
}

function niceStep(raw: number): number {
  const exp = Math.floor(Math.log10(raw));
  const base = 10 ** exp;
  const f = raw / base;
  const nice = f <= 1 ? 1 : f <= 2 ? 2 : f <= 2.5 ? 2.5 : f <= 5 ? 5 : 10;
  return nice * base;
}

function cleanFloat(v: number): number {
  return Number.parseFloat(v.toPrecision(12));
}

/** Ticks of a log axis: powers of ten, with 2 and 5 between them when the range is short. */
export function logTicks(min: number, max: number): number[] {
  const lo = Math.floor(Math.log10(min));
  const hi = Math.ceil(Math.log10(max));
  const ticks: number[] = [];
  const steps = hi - lo <= 2 ? [1, 2, 5] : [1];
  for (let e = lo; e <= hi; e++) {
    for (const m of steps) {
      const v = cleanFloat(m * 10 ** e);
      if (v >= min * 0.999 && v <= max * 1.001) ticks.push(v);
    }
  }
  return ticks.length >= 2 ? ticks : [min, max];
}

/** Short tick label: 1.5k, 20k, 2M; up to 3 significant digits below 1000. */
export function formatTick(v: number): string {
  const a = Math.abs(v);
  if (a >= 1e6) return `${cleanFloat(v / 1e6)}M`;
  if (a >= 1e4) return `${cleanFloat(v / 1e3)}k`;
  if (a === 0) return '0';
  return String(cleanFloat(Number(v.toPrecision(4))));
}

export function escapeXml(text: string): string {
  return text
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;')
    .replace(/'/g, '&apos;');
}

const r1 = (v: number): string => String(Math.round(v * 10) / 10);

/**
 * A standalone SVG line chart: one `<path>` per series (axes and grid use `<line>`, markers
 * `<circle>`), y from 0 with nice ticks, a legend to the right.
 */
export function lineChartSvg(options: LineChartOptions): string {
  const width = options.width ?? 760;
  const height = options.height ?? 440;
  const legendWidth = Math.min(
    240,
    20 + Math.max(60, ...options.series.map((s) => Math.min(28, s.name.length) * 7 + 24)),
  );
  const m = { top: 44, right: legendWidth + 16, bottom: 56, left: 68 };
  const plotW = width - m.left - m.right;
  const plotH = height - m.top - m.bottom;

  const xs = options.series.flatMap((s) => s.points.map((p) => p[0])).filter(Number.isFinite);
  const ys = options.series.flatMap((s) => s.points.map((p) => p[1])).filter(Number.isFinite);
  const xMinData = xs.length ? Math.min(...xs) : 0;
  const xMaxData = xs.length ? Math.max(...xs) : 1;
  const scaleKind = options.xScale ?? 'auto';
  const useLog = xMinData > 0 && (scaleKind === 'log' || (scaleKind === 'auto' && xMaxData / xMinData >= 10));

  let xTicks: number[];
  let xLo: number;
  let xHi: number;
  if (useLog) {
    xTicks = options.xTicksAt?.length
      ? [...new Set(options.xTicksAt)].sort((a, b) => a - b)
      : logTicks(xMinData, xMaxData);
    xLo = Math.min(xMinData, ...xTicks);
    xHi = Math.max(xMaxData, ...xTicks);
    if (xLo === xHi) {
      xLo /= 2;
      xHi *= 2;
    }
  } else if (options.xTicksAt?.length) {
    xTicks = [...new Set(options.xTicksAt)].sort((a, b) => a - b);
    xLo = Math.min(xMinData, ...xTicks);
    xHi = Math.max(xMaxData, ...xTicks);
    if (xLo === xHi) {
      xLo -= 1;
      xHi += 1;
    }
  } else {
    const t = niceTicks(Math.min(0, xMinData), xMaxData, 6);
    xTicks = t.ticks;
    xLo = t.min;
    xHi = t.max;
  }
  const yt = niceTicks(0, Math.max(ys.length ? Math.max(...ys) : 1, 1e-9), 5);
  const yLo = yt.min;
  const yHi = yt.max;

  const px = (x: number): number => {
    const f = useLog
      ? (Math.log(x) - Math.log(xLo)) / (Math.log(xHi) - Math.log(xLo))
      : (x - xLo) / (xHi - xLo);
    // Inset log/explicit-tick axes a little so end points do not sit on the frame.
    const inset = useLog || options.xTicksAt?.length ? 0.04 : 0;
    return m.left + (inset + f * (1 - 2 * inset)) * plotW;
  };
  const py = (y: number): number => m.top + plotH - ((y - yLo) / (yHi - yLo || 1)) * plotH;

  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" role="img" font-family="system-ui, -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif" font-size="12">`,
  );
  out.push(`<title>${escapeXml(options.title)}</title>`);
  out.push(`<rect x="0" y="0" width="${width}" height="${height}" fill="#ffffff"/>`);
  out.push(
    `<text x="${r1(m.left + plotW / 2)}" y="24" text-anchor="middle" font-size="15" font-weight="600">${escapeXml(options.title)}</text>`,
  );

  // Grid and y axis.
  for (const v of yt.ticks) {
    const y = r1(py(v));
    out.push(`<line x1="${m.left}" y1="${y}" x2="${m.left + plotW}" y2="${y}" stroke="#e5e5e5"/>`);
    out.push(
      `<text x="${m.left - 8}" y="${y}" text-anchor="end" dominant-baseline="middle" fill="#333">${formatTick(v)}</text>`,
    );
  }
  let lastLabelX = Number.NEGATIVE_INFINITY;
  for (const v of xTicks) {
    const xv = px(v);
    const x = r1(xv);
    out.push(`<line x1="${x}" y1="${m.top}" x2="${x}" y2="${m.top + plotH}" stroke="#f0f0f0"/>`);
    out.push(`<line x1="${x}" y1="${m.top + plotH}" x2="${x}" y2="${m.top + plotH + 5}" stroke="#333"/>`);
    // Skip a label that would overlap the one before it.
    if (xv - lastLabelX < 30) continue;
    lastLabelX = xv;
    out.push(
      `<text x="${x}" y="${m.top + plotH + 18}" text-anchor="middle" fill="#333">${formatTick(v)}</text>`,
    );
  }
  out.push(
    `<line x1="${m.left}" y1="${m.top + plotH}" x2="${m.left + plotW}" y2="${m.top + plotH}" stroke="#333"/>`,
  );
  out.push(`<line x1="${m.left}" y1="${m.top}" x2="${m.left}" y2="${m.top + plotH}" stroke="#333"/>`);
  out.push(
    `<text x="${r1(m.left + plotW / 2)}" y="${height - 14}" text-anchor="middle" fill="#111">${escapeXml(options.xLabel)}${useLog ? ' (log scale)' : ''}</text>`,
  );
  out.push(
    `<text transform="translate(18 ${r1(m.top + plotH / 2)}) rotate(-90)" text-anchor="middle" fill="#111">${escapeXml(options.yLabel)}</text>`,
  );

  // Series: one <path> each, then markers.
  options.series.forEach((s, i) => {
    const color = PALETTE[i % PALETTE.length]!;
    const pts = s.points
      .filter((p) => Number.isFinite(p[0]) && Number.isFinite(p[1]) && (!useLog || p[0] > 0))
      .sort((a, b) => a[0] - b[0]);
    const d = pts.map((p, j) => `${j === 0 ? 'M' : 'L'}${r1(px(p[0]))} ${r1(py(p[1]))}`).join(' ');
    out.push(
      `<path d="${d || `M${m.left} ${m.top + plotH}`}" fill="none" stroke="${color}" stroke-width="2" stroke-linejoin="round" stroke-linecap="round"><title>${escapeXml(s.name)}</title></path>`,
    );
    if (options.markers ?? true) {
      for (const p of pts) {
        out.push(`<circle cx="${r1(px(p[0]))}" cy="${r1(py(p[1]))}" r="3" fill="${color}"/>`);
      }
    }
  });

  // Legend.
  const lx = m.left + plotW + 20;
  options.series.forEach((s, i) => {
    const color = PALETTE[i % PALETTE.length]!;
    const ly = m.top + 8 + i * 20;
    const label = s.name.length > 28 ? `${s.name.slice(0, 27)}…` : s.name;
    out.push(`<line x1="${lx}" y1="${ly}" x2="${lx + 18}" y2="${ly}" stroke="${color}" stroke-width="3"/>`);
    out.push(
      `<text x="${lx + 24}" y="${ly}" dominant-baseline="middle" fill="#111">${escapeXml(label)}</text>`,
    );
  });
  if (options.series.length === 0) {
    out.push(
      `<text x="${r1(m.left + plotW / 2)}" y="${r1(m.top + plotH / 2)}" text-anchor="middle" fill="#777">no data</text>`,
    );
  }
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}
