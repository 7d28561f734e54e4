/** The fairness bench's charts: grouped bars of B's latency, and a tenant's served share over time. */
import { escapeXml, formatTick, lineChartSvg, niceTicks } from '../load/plot.js';

/** One group of bars: a label (system and replicas) and one value per bar name. */
export interface BarGroup {
  label: string;
  values: number[];
}

const COLORS = ['#0072B2', '#56B4E9', '#D55E00', '#E69F00', '#009E73', '#CC79A7'];

/**
 * A grouped bar chart, y from 0: one group per `groups` entry, one bar per `bars` name in it,
 * the value printed above each bar.
 */
export function groupedBarsSvg(options: {
  title: string;
  yLabel: string;
  bars: string[];
  groups: BarGroup[];
}): string {
  const width = 760;
  const height = 440;
  const m = { top: 44, right: 190, bottom: 64, left: 68 };
  const plotW = width - m.left - m.right;
  const plotH = height - m.top - m.bottom;
  const all = options.groups.flatMap((g) => g.values).filter(Number.isFinite);
  const yt = niceTicks(0, Math.max(1e-9, ...all), 5);
  const py = (v: number) => m.top + plotH - (v / (yt.max || 1)) * plotH;
  const groupW = plotW / Math.max(1, options.groups.length);
  const barW = (groupW * 0.8) / Math.max(1, options.bars.length);
  const r1 = (v: number) => String(Math.round(v * 10) / 10);
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" role="img" font-family="system-ui, -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif" font-size="12">`,
    `<title>${escapeXml(options.title)}</title>`,
    `<rect x="0" y="0" width="${width}" height="${height}" fill="#ffffff"/>`,
    `<text x="${r1(m.left + plotW / 2)}" y="24" text-anchor="middle" font-size="15" font-weight="600">${escapeXml(options.title)}</text>`,
  ];
  for (const v of yt.ticks) {
    const y = r1(py(v));
    out.push(`<line x1="${m.left}" y1="${y}" x2="${m.left + plotW}" y2="${y}" stroke="#e5e5e5"/>`);
    out.push(
      `<text x="${m.left - 8}" y="${y}" text-anchor="end" dominant-baseline="middle" fill="#333">${formatTick(v)}</text>`,
    );
  }
  options.groups.forEach((group, g) => {
    const x0 = m.left + g * groupW + groupW * 0.1;
    group.values.forEach((value, b) => {
      if (!Number.isFinite(value)) return;
      const x = x0 + b * barW;
      const y = py(value);
      const color = COLORS[b % COLORS.length];
      out.push(
        `<rect x="${r1(x)}" y="${r1(y)}" width="${r1(barW * 0.92)}" height="${r1(m.top + plotH - y)}" fill="${color}"><title>${escapeXml(`${group.label}: ${options.bars[b]} ${value.toFixed(0)}`)}</title></rect>`,
      );
      out.push(
        `<text x="${r1(x + barW * 0.46)}" y="${r1(y - 4)}" text-anchor="middle" font-size="10" fill="#333">${value.toFixed(0)}</text>`,
      );
    });
    out.push(
      `<text x="${r1(m.left + (g + 0.5) * groupW)}" y="${m.top + plotH + 18}" text-anchor="middle" fill="#111">${escapeXml(group.label)}</text>`,
    );
  });
  out.push(
    `<line x1="${m.left}" y1="${m.top + plotH}" x2="${m.left + plotW}" y2="${m.top + plotH}" stroke="#333"/>`,
    `<line x1="${m.left}" y1="${m.top}" x2="${m.left}" y2="${m.top + plotH}" stroke="#333"/>`,
    `<text transform="translate(18 ${r1(m.top + plotH / 2)}) rotate(-90)" text-anchor="middle" fill="#111">${escapeXml(options.yLabel)}</text>`,
  );
  options.bars.forEach((name, b) => {
    const ly = m.top + 8 + b * 20;
    const lx = m.left + plotW + 20;
    out.push(
      `<rect x="${lx}" y="${ly - 6}" width="14" height="12" fill="${COLORS[b % COLORS.length]}"/>`,
      `<text x="${lx + 20}" y="${ly}" dominant-baseline="middle" fill="#111">${escapeXml(name)}</text>`,
    );
  });
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}

/** A tenant's share of the served cost per second, one series per system and replica count. */
export function shareOverTimeSvg(
  title: string,
  series: { name: string; points: [number, number][] }[],
  target: number,
): string {
  const xs = series.flatMap((s) => s.points.map((p) => p[0]));
  const last = xs.length ? Math.max(...xs) : 1;
  return lineChartSvg({
    title,
    xLabel: 'seconds into the measured window',
    yLabel: 'share of served cost (%)',
    xScale: 'linear',
    series: [
      ...series,
      {
        name: `target ${target.toFixed(1)}%`,
        points: [
          [0, target],
          [last, target],
        ],
      },
    ],
  });
}
