import {
  PROTOCOL_VERSION_META_KEY,
  ProtocolErrorCode,
  SUPPORTED_PROTOCOL_VERSIONS,
} from '@modelcontextprotocol/server';

/**
 * The 2026-07-28-era revisions the SDK's handler serves. The SDK keeps this list to itself
 * (`SUPPORTED_MODERN_PROTOCOL_VERSIONS`, apart from the exported `SUPPORTED_PROTOCOL_VERSIONS`,
 * which is the 2025-era `initialize` list). Should the SDK stop serving 2026-07-28, the
 * 2026-07-28 tests fail; a revision it adds is served all the same, since requests naming a
 * modern revision carry the envelope claim and are left to the SDK.
 */
const MODERN_PROTOCOL_VERSIONS: readonly string[] = ['2026-07-28'];

/** Every revision a request may name in `MCP-Protocol-Version`, newest first. */
export const SERVED_PROTOCOL_VERSIONS: readonly string[] = [
  ...MODERN_PROTOCOL_VERSIONS,
  ...SUPPORTED_PROTOCOL_VERSIONS,
];

/** Longest header value echoed back in the error, in characters. */
const MAX_ECHOED = 64;

/** The JSON-RPC error object (the `error` member of the response) refusing a protocol version. */
export interface ProtocolVersionRefusal {
  /** MCP's UnsupportedProtocolVersion code, -32022, the SDK's own for a modern revision it does not serve. */
  code: number;
  message: string;
  /** What the 2026-07-28 revision puts in this error: the revisions served and the one asked for. */
  data: { supported: string[]; requested: string };
}

/**
 * The error for a request whose `MCP-Protocol-Version` header names a revision this server does
 * not serve, or `undefined` when the header is absent, served, or the SDK answers it well itself.
 *
 * Why the front door checks it: the SDK classifies any header value that sorts at or after
 * 2026-07-28 as a modern claim, and `garbage` or `2099-01-01` do, so a 2025-era request carrying
 * one (no per-request envelope) was told it lacks a `_meta` envelope rather than that its version
 * is unknown. A request that does carry an envelope claim
 * (`_meta["io.modelcontextprotocol/protocolVersion"]`) is left to the SDK: it answers it with this
 * same code and the modern revisions in `data.supported`, or with a header/body mismatch, which is
 * what a 2026-07-28 client negotiates with. An `initialize` may come without the header (its
 * version is in the body); then nothing is checked here.
 *
 * @param header the request's `MCP-Protocol-Version` header (Node joins repeated ones with ", ",
 *   which is then not a served revision)
 * @param parsed the parsed request body
 */
export function unsupportedProtocolVersion(
  header: string | string[] | undefined,
  parsed: unknown,
): ProtocolVersionRefusal | undefined {
  if (header === undefined) return undefined;
  // Surrounding spaces and tabs are not part of a header value (RFC 9110 OWS); the SDK strips them too.
  const version = (Array.isArray(header) ? header.join(', ') : header).trim();
  if (SERVED_PROTOCOL_VERSIONS.includes(version) || carriesEnvelopeClaim(parsed)) return undefined;
  const requested = version.length > MAX_ECHOED ? `${version.slice(0, MAX_ECHOED)}…` : version;
  return {
    code: ProtocolErrorCode.UnsupportedProtocolVersion,
    message: `unsupported MCP-Protocol-Version ${JSON.stringify(requested)}; this server supports ${SERVED_PROTOCOL_VERSIONS.join(', ')}`,
    data: { supported: [...SERVED_PROTOCOL_VERSIONS], requested },
  };
}

/** Whether a single JSON-RPC message names its revision in its 2026-07-28 `_meta` envelope. */
function carriesEnvelopeClaim(parsed: unknown): boolean {
  if (!isObject(parsed)) return false;
  const params = parsed.params;
  if (!isObject(params)) return false;
  const meta = params._meta;
  return isObject(meta) && PROTOCOL_VERSION_META_KEY in meta;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
