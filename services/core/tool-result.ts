import type { Final } from './generated/mcp_cluster.js';

/**
 * An MCP `CallToolResult` as a worker's adapter produces it. Image and audio content may carry
 * their `data` as raw bytes (`Uint8Array`): they travel as bytes to the ingress, which writes them
 * base64 (as MCP wants) into the answer. Base64 `data` strings are passed through as they are.
 */
export interface ToolResult {
  content: unknown[];
  structuredContent?: Record<string, unknown>;
  isError?: boolean;
  _meta?: Record<string, unknown>;
}

/** The methods a tool may ask its caller for input with (MCP multi-round-trip input). */
export const INPUT_METHODS = ['elicitation/create', 'sampling/createMessage', 'roots/list'] as const;
export type InputMethod = (typeof INPUT_METHODS)[number];

/** The client capability a caller must declare to answer each input method. */
export const INPUT_CAPABILITY: Readonly<Record<InputMethod, 'elicitation' | 'sampling' | 'roots'>> = {
  'elicitation/create': 'elicitation',
  'sampling/createMessage': 'sampling',
  'roots/list': 'roots',
};

/** One request for the caller's input: an elicitation, a sampling or a roots request, as MCP writes it. */
export interface InputRequest {
  method: InputMethod;
  params: Record<string, unknown>;
}

/**
 * An MCP `InputRequiredResult` as a worker's adapter produces it: the call cannot finish without
 * the caller's answers to `inputRequests` (keys chosen by the tool). The caller calls again with
 * its answers (`inputResponses`, same keys) and the `requestState` it got, and the tool runs again
 * from the start with both (see `AdapterContext.input`). `requestState` is the tool's own state,
 * as plain text: the ingress signs it (bound to the tool and the caller) before it leaves the
 * cluster and checks the signature when it comes back, so any replica can resume the call.
 */
export interface InputRequiredResult {
  resultType: 'input_required';
  inputRequests: Record<string, InputRequest>;
  requestState?: string;
  _meta?: Record<string, unknown>;
}

/** An `InputRequiredResult` asking for `inputRequests`, with `requestState` when given. */
export function inputRequired(
  inputRequests: Record<string, InputRequest>,
  requestState?: string,
): InputRequiredResult {
  return {
    resultType: 'input_required',
    inputRequests,
    ...(requestState !== undefined ? { requestState } : {}),
  };
}

/** Whether an adapter's result asks for the caller's input. */
export function isInputRequired(result: ToolResult | InputRequiredResult): result is InputRequiredResult {
  return (result as { resultType?: unknown }).resultType === 'input_required';
}

/** Content types whose `data` is media (base64 in MCP's JSON). */
function isMedia(item: unknown): item is { type: string; data: Uint8Array } {
  if (typeof item !== 'object' || item === null) return false;
  const { type, data } = item as { type?: unknown; data?: unknown };
  return (type === 'image' || type === 'audio') && data instanceof Uint8Array;
}

/**
 * Cuts a result into the `Final` chunk's parts: its JSON text without `_meta`, split where the
 * raw media bytes go, and `_meta` as JSON text of its own. Each value is stringified once.
 */
export function toFinal(result: ToolResult | InputRequiredResult): Final {
  const jsonParts: string[] = [];
  const media: Uint8Array[] = [];
  let text = '{';
  // Members in the result's own order, as `JSON.stringify` would write them.
  for (const key of Object.keys(result)) {
    if (key === '_meta') continue;
    if (key !== 'content') {
      const value = JSON.stringify((result as unknown as Record<string, unknown>)[key]);
      if (value !== undefined) text += `${text.length > 1 ? ',' : ''}${JSON.stringify(key)}:${value}`;
      continue;
    }
    text += `${text.length > 1 ? ',' : ''}"content":[`;
    (result as ToolResult).content.forEach((item, i) => {
      if (i > 0) text += ',';
      if (!isMedia(item)) {
        text += JSON.stringify(item) ?? 'null';
        return;
      }
      // The item's members in their own order, cut right after the opening quote of `data`.
      text += '{';
      let first = true;
      for (const member of Object.keys(item)) {
        if (member === 'data') {
          jsonParts.push(`${text}${first ? '' : ','}"data":"`);
          media.push(item.data);
          text = '"';
        } else {
          const json = JSON.stringify((item as unknown as Record<string, unknown>)[member]);
          if (json === undefined) continue;
          text += `${first ? '' : ','}${JSON.stringify(member)}:${json}`;
        }
        first = false;
      }
      text += '}';
    });
    text += ']';
  }
  jsonParts.push(`${text}}`);
  const meta = result._meta === undefined ? undefined : JSON.stringify(result._meta);
  const asks = isInputRequired(result);
  return {
    jsonParts,
    media,
    metaJson: meta ?? '',
    isError: !asks && result.isError === true,
    inputRequired: asks,
  };
}

/**
 * The result's JSON text from a `Final` chunk, with `addedMeta` (JSON members, e.g.
 * `"key":{...}`, or empty) added to its `_meta`: media become base64 and the text is spliced,
 * never parsed. A key of `addedMeta` the result's `_meta` already has is written after it, so
 * it wins for JSON readers. Undefined when the chunk does not hold a JSON object.
 */
export function finalToJson(final: Final, addedMeta = ''): string | undefined {
  const { jsonParts, media } = final;
  const n = media.length;
  if (jsonParts.length !== n + 1) return undefined;
  const head = jsonParts[0] as string;
  let last = jsonParts[n] as string;
  if (head[0] !== '{' || last[last.length - 1] !== '}' || (n === 0 && head.length < 2)) return undefined;
  let meta = final.metaJson;
  if (addedMeta) {
    if (meta.length < 2 || meta[0] !== '{' || meta[meta.length - 1] !== '}') meta = `{${addedMeta}}`;
    else meta = `${meta.slice(0, -1)}${meta.length > 2 ? ',' : ''}${addedMeta}}`;
  }
  // Spliced into the last part only: slicing the whole text would copy the media's base64 again.
  if (meta) last = `${last.slice(0, -1)}${n === 0 && last.length === 2 ? '' : ','}"_meta":${meta}}`;
  if (n === 0) return last;
  let json = head;
  for (let i = 0; i < n; i++)
    json += base64(media[i] as Uint8Array) + (i + 1 === n ? last : jsonParts[i + 1]);
  return json;
}

function base64(bytes: Uint8Array): string {
  return (
    Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  ).toString('base64');
}
