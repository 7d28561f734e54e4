import { ClusterError } from '../core/index.js';

/**
 * Stamps a tool result for the 2026-07-28 wire without parsing it: the text gets
 * `"resultType":"complete"` and `_meta["io.modelcontextprotocol/serverInfo"]`, exactly what the
 * SDK's encoder adds to a `tools/call` result on that revision (a result that already names its
 * server keeps it). `json` is a `CallToolResult` as JSON text; `serverInfoJson` the server's
 * `{ name, version }` as JSON text.
 *
 * Only the top-level members and those of `_meta` are walked (string values are skipped with
 * `indexOf`, nested values by their brackets), so a 400 KB image costs a few scans instead of a
 * parse and a stringify. Text this walker does not expect goes through `JSON.parse` instead.
 */
export function stampModernResult(json: string, serverInfoJson: string): string {
  const open = skipWhitespace(json, 0);
  const top = json.charCodeAt(open) === OPEN_BRACE ? membersOf(json, open) : undefined;
  if (!top || top.some((m) => m.key === 'resultType')) return stampParsed(json, serverInfoJson);
  const meta = top.find((m) => m.key === '_meta');
  const resultType = '"resultType":"complete"';
  if (!meta) {
    const rest = top.length > 0 ? ',' : '';
    return `{"_meta":{"${SERVER_INFO_META_KEY}":${serverInfoJson}},${resultType}${rest}${json.slice(open + 1)}`;
  }
  if (json.charCodeAt(meta.valueStart) !== OPEN_BRACE) return stampParsed(json, serverInfoJson);
  const inner = membersOf(json, meta.valueStart);
  if (!inner) return stampParsed(json, serverInfoJson);
  if (inner.some((m) => m.key === SERVER_INFO_META_KEY)) return `{${resultType},${json.slice(open + 1)}`;
  const at = meta.valueStart + 1;
  const info = `"${SERVER_INFO_META_KEY}":${serverInfoJson}${inner.length > 0 ? ',' : ''}`;
  return `{${resultType},${json.slice(open + 1, at)}${info}${json.slice(at)}`;
}

/**
 * Stamps an `InputRequiredResult` for the 2026-07-28 wire: `_meta["io.modelcontextprotocol/serverInfo"]`
 * as on every result of that revision, its `resultType` kept. Such results are small: parsed.
 */
export function stampInputRequired(json: string, serverInfoJson: string): string {
  const result = JSON.parse(json) as Record<string, unknown>;
  const meta = isPlainObject(result._meta) ? result._meta : {};
  if (meta[SERVER_INFO_META_KEY] !== undefined) return json;
  return JSON.stringify({
    ...result,
    _meta: { ...meta, [SERVER_INFO_META_KEY]: JSON.parse(serverInfoJson) },
  });
}

/** `_meta` key of the server's identity on 2026-07-28 results. */
const SERVER_INFO_META_KEY = 'io.modelcontextprotocol/serverInfo';

/** The same stamping on the parsed value, for text the walker refused. */
function stampParsed(json: string, serverInfoJson: string): string {
  const result = JSON.parse(json) as Record<string, unknown>;
  if (result.resultType !== undefined && result.resultType !== 'complete') {
    throw new ClusterError(
      'INTERNAL',
      `the tool result has resultType ${JSON.stringify(result.resultType)}; tools/call results only support "complete" on protocol revision 2026-07-28`,
    );
  }
  const stamped: Record<string, unknown> = { ...result, resultType: 'complete' };
  const meta = result._meta;
  if (meta === undefined) stamped._meta = { [SERVER_INFO_META_KEY]: JSON.parse(serverInfoJson) };
  else if (isPlainObject(meta) && meta[SERVER_INFO_META_KEY] === undefined)
    stamped._meta = { ...meta, [SERVER_INFO_META_KEY]: JSON.parse(serverInfoJson) };
  return JSON.stringify(stamped);
}

interface Member {
  key: string;
  /** Index of the first character of the member's value. */
  valueStart: number;
}

const OPEN_BRACE = 0x7b;
const OPEN_BRACKET = 0x5b;
const QUOTE = 0x22;
const BACKSLASH = 0x5c;
/** The characters that open, close or quote inside a nested value. */
const STRUCTURE = /["{}[\]]/g;
/** The characters that end a number, `true`, `false` or `null`. */
const SCALAR_END = /[,}\]\s]/g;

/**
 * The members of the JSON object whose `{` is at `open`, or `undefined` when the text there is not
 * a well-formed object as far as this walk can tell.
 */
function membersOf(text: string, open: number): Member[] | undefined {
  const members: Member[] = [];
  let i = skipWhitespace(text, open + 1);
  if (text[i] === '}') return members;
  for (;;) {
    if (text.charCodeAt(i) !== QUOTE) return undefined;
    const keyEnd = skipString(text, i);
    if (keyEnd < 0) return undefined;
    const raw = text.slice(i + 1, keyEnd - 1);
    const key = raw.includes('\\') ? (JSON.parse(text.slice(i, keyEnd)) as string) : raw;
    i = skipWhitespace(text, keyEnd);
    if (text[i] !== ':') return undefined;
    const valueStart = skipWhitespace(text, i + 1);
    const valueEnd = skipValue(text, valueStart);
    if (valueEnd < 0) return undefined;
    members.push({ key, valueStart });
    i = skipWhitespace(text, valueEnd);
    if (text[i] === ',') {
      i = skipWhitespace(text, i + 1);
      continue;
    }
    return text[i] === '}' ? members : undefined;
  }
}

function skipWhitespace(text: string, i: number): number {
  let j = i;
  for (;;) {
    const c = text.charCodeAt(j);
    if (c !== 0x20 && c !== 0x0a && c !== 0x0d && c !== 0x09) return j;
    j++;
  }
}

/** Index just past the string whose opening quote is at `i`; -1 when it never closes. */
function skipString(text: string, i: number): number {
  let from = i + 1;
  for (;;) {
    const quote = text.indexOf('"', from);
    if (quote < 0) return -1;
    let backslashes = 0;
    while (text.charCodeAt(quote - 1 - backslashes) === BACKSLASH) backslashes++;
    if (backslashes % 2 === 0) return quote + 1;
    from = quote + 1;
  }
}

/** Index just past the value that starts at `i`; -1 when it does not end. */
function skipValue(text: string, i: number): number {
  const c = text.charCodeAt(i);
  if (c === QUOTE) return skipString(text, i);
  if (c === OPEN_BRACE || c === OPEN_BRACKET) {
    let depth = 0;
    let from = i;
    for (;;) {
      STRUCTURE.lastIndex = from;
      const found = STRUCTURE.exec(text);
      if (!found) return -1;
      const at = found.index;
      const ch = text.charCodeAt(at);
      if (ch === QUOTE) {
        from = skipString(text, at);
        if (from < 0) return -1;
        continue;
      }
      depth += ch === OPEN_BRACE || ch === OPEN_BRACKET ? 1 : -1;
      from = at + 1;
      if (depth === 0) return from;
    }
  }
  if (Number.isNaN(c)) return -1;
  SCALAR_END.lastIndex = i;
  const end = SCALAR_END.exec(text);
  return end && end.index > i ? end.index : -1;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
