import { ClusterError } from './errors.js';

// `x-mcp-header` (MCP 2026-07-28, SEP-2243): a tool's input schema may mark a primitive argument
// to be mirrored in an HTTP header, `Mcp-Param-<Name>`, so that load balancers and gateways can
// route or rate-limit on it (a region, a model, a tenant key) without reading the body. The
// client sends the header; the server must check it agrees with the body.

/** One argument mirrored in a header: where it sits in `arguments` and the header's `<Name>`. */
export interface ParamHeader {
  /** Property names from the root of `arguments`, e.g. `['region']`. */
  path: string[];
  /** The `x-mcp-header` value: the header is `Mcp-Param-<header>`. */
  header: string;
  /** The property's JSON Schema type: string, integer, number or boolean. */
  type: 'string' | 'integer' | 'number' | 'boolean';
}

/** RFC 9110 token characters: what a header name may hold. */
const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
const TYPES = new Set(['string', 'integer', 'number', 'boolean']);
/**
 * Keywords whose subschemas are not reached by a chain of `properties` alone: a marked property
 * under one of them has no single place in `arguments`, so the declaration is invalid there.
 */
const UNREACHABLE = [
  'items',
  'prefixItems',
  'contains',
  'additionalProperties',
  'unevaluatedProperties',
  'unevaluatedItems',
  'propertyNames',
  'not',
  'if',
  'then',
  'else',
];
const UNREACHABLE_LISTS = ['oneOf', 'anyOf', 'allOf'];
const UNREACHABLE_MAPS = ['patternProperties', 'dependentSchemas', '$defs', 'definitions'];

/**
 * The `x-mcp-header` declarations of a tool's input schema, or a problem naming the property when
 * one is invalid: not on a property reached through `properties` only, not a non-empty RFC 9110
 * token, not on a primitive type, or the same header (case-insensitively) twice.
 */
export function paramHeadersOf(schema: unknown): ParamHeader[] | string {
  const found: ParamHeader[] = [];
  const seen = new Map<string, string>();
  const visit = (node: unknown, path: string[], reachable: boolean): string | undefined => {
    if (typeof node !== 'object' || node === null || Array.isArray(node)) return undefined;
    const s = node as Record<string, unknown>;
    const at = path.length === 0 ? 'the schema root' : `property ${path.join('.')}`;
    if ('x-mcp-header' in s) {
      if (!reachable || path.length === 0)
        return `${at}: x-mcp-header is allowed only on a property reached through "properties" alone`;
      const header = s['x-mcp-header'];
      if (typeof header !== 'string' || !TOKEN.test(header))
        return `${at}: x-mcp-header must be a header name (letters, digits and !#$%&'*+.^_\`|~-)`;
      if (typeof s.type !== 'string' || !TYPES.has(s.type))
        return `${at}: x-mcp-header is allowed only on a string, integer, number or boolean property`;
      const other = seen.get(header.toLowerCase());
      if (other !== undefined)
        return `${at}: x-mcp-header "${header}" is declared twice (also as "${other}")`;
      seen.set(header.toLowerCase(), header);
      found.push({ path, header, type: s.type as ParamHeader['type'] });
    }
    const properties = s.properties;
    if (typeof properties === 'object' && properties !== null)
      for (const [key, child] of Object.entries(properties)) {
        const problem = visit(child, [...path, key], reachable);
        if (problem) return problem;
      }
    // Each subschema named by where it sits (`region.items`, `anyOf.0`), for the problem's message.
    const branches: [string, unknown][] = [
      ...UNREACHABLE.map((k): [string, unknown] => [k, s[k]]),
      ...UNREACHABLE_LISTS.flatMap((k) =>
        Array.isArray(s[k]) ? (s[k] as unknown[]).map((b, i): [string, unknown] => [`${k}.${i}`, b]) : [],
      ),
      ...UNREACHABLE_MAPS.flatMap((k) =>
        typeof s[k] === 'object' && s[k] !== null
          ? Object.entries(s[k] as object).map(([n, b]): [string, unknown] => [`${k}.${n}`, b])
          : [],
      ),
    ];
    for (const [where, branch] of branches) {
      const problem = visit(branch, [...path, where], false);
      if (problem) return problem;
    }
    return undefined;
  };
  return visit(schema, [], true) ?? found;
}

/** Canonical Base64: the alphabet, whole quads, padding only where it must be. */
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
const DECIMAL = /^-?\d+(\.\d+)?$/;

/**
 * Checks the `Mcp-Param-*` headers of one `tools/call` against its `arguments`: each declared
 * argument the body carries (not null) needs its header, equal to it once decoded (the value as
 * is, or `=?base64?<canonical Base64 of its UTF-8>?=`; numbers compared as numbers, booleans as
 * `true`/`false`). A header for an argument the body leaves out is ignored. Returns a
 * HEADER_MISMATCH error (MCP -32020, HTTP 400) naming the header, or undefined when all agree.
 * `headerOf` reads one request header by its lower-case name.
 */
export function checkParamHeaders(
  declared: readonly ParamHeader[],
  args: unknown,
  headerOf: (lowerCaseName: string) => string | undefined,
): ClusterError | undefined {
  for (const d of declared) {
    let value: unknown = args;
    for (const key of d.path)
      value =
        typeof value === 'object' && value !== null ? (value as Record<string, unknown>)[key] : undefined;
    if (value === undefined || value === null) continue;
    const text =
      typeof value === 'string' || typeof value === 'boolean' || typeof value === 'number'
        ? String(value)
        : undefined;
    if (text === undefined) continue;
    const name = `Mcp-Param-${d.header}`;
    const sent = headerOf(name.toLowerCase());
    const mismatch = (why: string) =>
      new ClusterError(
        'HEADER_MISMATCH',
        `the ${name} header ${why}; send ${name} with the value of argument ${d.path.join('.')}`,
        {
          data: { mismatch: { header: name } },
        },
      );
    if (sent === undefined) return mismatch('is missing although the body carries the argument');
    const decoded = decodeParam(sent);
    if (decoded === undefined) return mismatch('is not canonical Base64 of UTF-8 inside =?base64?...?=');
    const equal =
      typeof value === 'number' && DECIMAL.test(decoded) ? Number(decoded) === value : decoded === text;
    if (!equal)
      return mismatch(`(${JSON.stringify(decoded)}) disagrees with the body (${JSON.stringify(value)})`);
  }
  return undefined;
}

/** A header value as sent: `=?base64?...?=` decoded (undefined when that is not canonical UTF-8 Base64), else as is. */
function decodeParam(value: string): string | undefined {
  if (!value.startsWith('=?base64?') || !value.endsWith('?=') || value.length < 11) return value;
  const b64 = value.slice('=?base64?'.length, -2);
  if (!BASE64.test(b64)) return undefined;
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(Buffer.from(b64, 'base64'));
  } catch {
    return undefined;
  }
}
