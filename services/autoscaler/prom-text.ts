import { ClusterError } from '../core/index.js';

// The Prometheus text exposition format, parsed strictly enough to trust what it reads: what the
// scraped `/metrics` pages of mcp-cluster's processes (and Prometheus's own answers) are read with.

/** Metric family types of the text format (`# TYPE` lines). */
export type PromMetricType = 'counter' | 'gauge' | 'histogram' | 'summary' | 'untyped';

/** One sample line: `name{label="value",...} value [timestamp]`. */
export interface PromSample {
  readonly name: string;
  /** Label values by name; a prototype-less object, so a label named `__proto__` is an ordinary key. */
  readonly labels: Readonly<Record<string, string>>;
  /** The value; NaN and ±Infinity are legal. */
  readonly value: number;
  /** The optional timestamp, ms since the Unix epoch; undefined when the line has none. */
  readonly timestampMs: number | undefined;
}

/** A parsed `/metrics` page. */
export interface PromExposition {
  readonly samples: readonly PromSample[];
  /** Family name → type, from the `# TYPE` lines. */
  readonly types: ReadonlyMap<string, PromMetricType>;
}

/**
 * Longest line the parser accepts, in characters (1 MiB). A real exposition line is a name, a few
 * bounded labels and a number; a longer one is a broken or hostile target, reported by line number.
 */
export const MAX_EXPOSITION_LINE_CHARS = 1 << 20;

const METRIC_TYPES = new Set<string>(['counter', 'gauge', 'histogram', 'summary', 'untyped']);
const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const DECIMAL = /^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$/;
const INFINITY = /^([+-]?)inf(?:inity)?$/i;
const TIMESTAMP = /^-?\d{1,19}$/;
const COMMENT = /^#[ \t]+(HELP|TYPE)[ \t]+(\S+)(?:[ \t]+(.*))?$/;

function isNameStart(ch: number): boolean {
  // A-Z a-z _ :
  return (ch >= 65 && ch <= 90) || (ch >= 97 && ch <= 122) || ch === 95 || ch === 58;
}
function isNameChar(ch: number): boolean {
  return isNameStart(ch) || (ch >= 48 && ch <= 57);
}
function isBlank(ch: number): boolean {
  return ch === 32 || ch === 9;
}

/** A token for an error message: bounded in length, quoted, control characters escaped by JSON. */
export function shown(token: string): string {
  return JSON.stringify(token.length > 40 ? `${token.slice(0, 40)}…` : token);
}

/**
 * A sample value or a number in a Prometheus API answer: decimal or exponent notation, `NaN`, `+Inf`,
 * `-Inf` (case-insensitive, as Go's ParseFloat). undefined for anything else (hex, `1_000`, empty).
 */
export function parsePromNumber(token: string): number | undefined {
  if (DECIMAL.test(token)) return Number(token);
  const inf = INFINITY.exec(token);
  if (inf) return inf[1] === '-' ? Number.NEGATIVE_INFINITY : Number.POSITIVE_INFINITY;
  if (/^nan$/i.test(token)) return Number.NaN;
  return undefined;
}

/**
 * Parses the Prometheus text exposition format (version 0.0.4, as prom-client writes it): `# HELP` and
 * `# TYPE` lines, other comments, blank lines, samples with optional labels (values escaped with `\\`,
 * `\"` and `\n`, a trailing comma allowed), values including `NaN` and `±Inf`, and an optional integer
 * timestamp in ms. `origin` names the source in error messages (a URL).
 * @throws ClusterError `BACKEND_PROTOCOL` naming the line and column of the first malformed line.
 */
export function parsePrometheusText(text: string, origin = 'metrics text'): PromExposition {
  const samples: PromSample[] = [];
  const types = new Map<string, PromMetricType>();
  let lineNo = 0;
  let start = 0;
  while (start <= text.length) {
    let end = text.indexOf('\n', start);
    if (end < 0) end = text.length;
    lineNo++;
    const fail = (column: number, message: string): never => {
      throw new ClusterError('BACKEND_PROTOCOL', `${origin}: line ${lineNo}, column ${column}: ${message}`);
    };
    if (end - start > MAX_EXPOSITION_LINE_CHARS) {
      fail(
        1,
        `the line is ${end - start} characters long, more than the ${MAX_EXPOSITION_LINE_CHARS} accepted`,
      );
    }
    let line = text.slice(start, end);
    start = end + 1;
    if (line.endsWith('\r')) line = line.slice(0, -1);
    let i = 0;
    while (i < line.length && isBlank(line.charCodeAt(i))) i++;
    if (i === line.length) continue;
    if (line.charCodeAt(i) === 35 /* # */) {
      const comment = COMMENT.exec(line.slice(i));
      if (comment?.[1] === 'TYPE') {
        const family = comment[2] ?? '';
        const type = (comment[3] ?? '').trim();
        if (!METRIC_NAME.test(family)) fail(i + 1, `# TYPE names ${shown(family)}, not a metric name`);
        if (!METRIC_TYPES.has(type)) {
          fail(
            i + 1,
            `# TYPE ${family} has type ${shown(type)}; expected counter, gauge, histogram, summary or untyped`,
          );
        }
        if (!types.has(family)) types.set(family, type as PromMetricType);
      }
      // HELP text and free comments carry nothing the readers need.
      continue;
    }
    samples.push(parseSampleLine(line, i, fail));
  }
  return { samples, types };
}

function parseSampleLine(
  line: string,
  from: number,
  fail: (column: number, message: string) => never,
): PromSample {
  let i = from;
  if (!isNameStart(line.charCodeAt(i)))
    fail(i + 1, `expected a metric name, found ${shown(line.slice(i, i + 20))}`);
  while (i < line.length && isNameChar(line.charCodeAt(i))) i++;
  const name = line.slice(from, i);
  const labels: Record<string, string> = Object.create(null) as Record<string, string>;
  const skipBlanks = () => {
    while (i < line.length && isBlank(line.charCodeAt(i))) i++;
  };
  skipBlanks();
  if (line[i] === '{') {
    i++;
    for (;;) {
      skipBlanks();
      if (i >= line.length) fail(i + 1, `the label set of ${name} is not closed with "}"`);
      if (line[i] === '}') {
        i++;
        break;
      }
      const labelStart = i;
      const first = line.charCodeAt(i);
      // Label names are metric names without ":".
      if (!isNameStart(first) || first === 58) {
        fail(i + 1, `expected a label name, found ${shown(line.slice(i, i + 20))}`);
      }
      while (i < line.length && isNameChar(line.charCodeAt(i)) && line.charCodeAt(i) !== 58) i++;
      const label = line.slice(labelStart, i);
      skipBlanks();
      if (line[i] !== '=') fail(i + 1, `expected "=" after label ${label}`);
      i++;
      skipBlanks();
      if (line[i] !== '"') fail(i + 1, `the value of label ${label} must be in double quotes`);
      const quoteAt = i;
      i++;
      let value = '';
      let chunkStart = i;
      for (;;) {
        if (i >= line.length) fail(quoteAt + 1, `the value of label ${label} has no closing quote`);
        const ch = line[i];
        if (ch === '"') break;
        if (ch === '\\') {
          value += line.slice(chunkStart, i);
          const next = line[i + 1];
          if (next === '\\' || next === '"') value += next;
          else if (next === 'n') value += '\n';
          else if (next === undefined) fail(quoteAt + 1, `the value of label ${label} has no closing quote`);
          else
            fail(i + 1, `invalid escape "\\${next}" in the value of label ${label} (use \\\\, \\" or \\n)`);
          i += 2;
          chunkStart = i;
          continue;
        }
        i++;
      }
      value += line.slice(chunkStart, i);
      i++;
      if (Object.hasOwn(labels, label)) fail(labelStart + 1, `label ${label} appears twice`);
      labels[label] = value;
      skipBlanks();
      if (line[i] === ',') {
        i++;
        continue;
      }
      if (line[i] === '}') {
        i++;
        break;
      }
      fail(i + 1, `expected "," or "}" after the value of label ${label}`);
    }
    skipBlanks();
  } else if (i === from + name.length && i < line.length) {
    fail(i + 1, `expected a blank or "{" after the metric name ${name}`);
  }
  const valueStart = i;
  while (i < line.length && !isBlank(line.charCodeAt(i))) i++;
  const valueToken = line.slice(valueStart, i);
  if (valueToken === '') fail(valueStart + 1, `${name} has no value`);
  const value = parsePromNumber(valueToken);
  if (value === undefined)
    fail(valueStart + 1, `${shown(valueToken)} is not a number (e.g. 12, 1.5e3, NaN, +Inf)`);
  skipBlanks();
  let timestampMs: number | undefined;
  if (i < line.length) {
    const tsStart = i;
    while (i < line.length && !isBlank(line.charCodeAt(i))) i++;
    const token = line.slice(tsStart, i);
    if (!TIMESTAMP.test(token)) fail(tsStart + 1, `${shown(token)} is not a timestamp (integer ms)`);
    timestampMs = Number(token);
    skipBlanks();
    if (i < line.length) fail(i + 1, `unexpected ${shown(line.slice(i, i + 20))} after the timestamp`);
  }
  return { name, labels, value: value as number, timestampMs };
}
