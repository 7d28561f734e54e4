import { describe, expect, it } from 'vitest';
import { stampModernResult } from '../services/ingress/index.js';

const INFO = { name: 'mcp-cluster', version: '0.1.0' };
const INFO_JSON = JSON.stringify(INFO);
const KEY = 'io.modelcontextprotocol/serverInfo';

/** What the SDK's 2026-07-28 encoder makes of a tools/call result, on the parsed value. */
function sdkStamp(result: Record<string, unknown>): Record<string, unknown> {
  const meta = result._meta as Record<string, unknown> | undefined;
  const stamped: Record<string, unknown> = { ...result, resultType: 'complete' };
  if (meta === undefined) stamped._meta = { [KEY]: INFO };
  else if (typeof meta === 'object' && meta !== null && !Array.isArray(meta) && meta[KEY] === undefined)
    stamped._meta = { ...meta, [KEY]: INFO };
  return stamped;
}

const results: [string, Record<string, unknown>][] = [
  ['no _meta', { content: [{ type: 'text', text: 'hi' }] }],
  ['empty _meta', { content: [], _meta: {} }],
  [
    '_meta last, after nested values',
    {
      content: [{ type: 'text', text: 'a } ] { [ " \\ quote' }],
      structuredContent: {
        vectors: [
          [0.1, -2e-7, 3],
          [4, 5, 6],
        ],
        deep: { a: [{ b: null }] },
      },
      isError: false,
      _meta: { 'mcp-cluster/timing': { queueWaitMs: 1, backendMs: 2.5 } },
    },
  ],
  [
    '_meta first, keys with escapes',
    { _meta: { 'mcp-cluster/error-code': 'INTERNAL', 'we\\ird"key': 1 }, content: [], isError: true },
  ],
  ['serverInfo already there', { content: [], _meta: { [KEY]: { name: 'other', version: '9' } } }],
  ['string values that end in backslashes', { content: [{ type: 'text', text: 'ends\\\\' }], x: '\\"' }],
  ['unicode', { content: [{ type: 'text', text: 'héllo \u2028 ✓ 😀' }], _meta: { note: '😀' } }],
  ['_meta that is not an object', { content: [], _meta: null }],
  ['resultType already complete', { content: [], resultType: 'complete' }],
];

describe('stampModernResult', () => {
  it.each(results)('%s: same value as the SDK stamps, without parsing where it can', (_, result) => {
    for (const json of [JSON.stringify(result), JSON.stringify(result, null, 2)]) {
      const out = stampModernResult(json, INFO_JSON);
      expect(JSON.parse(out)).toEqual(sdkStamp(result));
    }
  });

  it('keeps a large string value byte for byte', () => {
    const image = 'A'.repeat(400_000);
    const json = JSON.stringify({
      content: [{ type: 'image', data: image, mimeType: 'image/png' }],
      _meta: {},
    });
    const out = stampModernResult(json, INFO_JSON);
    expect(out.length).toBe(json.length + '"resultType":"complete",'.length + `"${KEY}":${INFO_JSON}`.length);
    expect((JSON.parse(out) as { content: { data: string }[] }).content[0]?.data).toBe(image);
  });

  it('refuses a resultType other than complete, as the SDK does', () => {
    expect(() => stampModernResult('{"content":[],"resultType":"input_required"}', INFO_JSON)).toThrow(
      /resultType "input_required"/,
    );
  });
});
