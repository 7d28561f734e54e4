import { describe, expect, it } from 'vitest';
import { ClusterError, checkParamHeaders, type ParamHeader, paramHeadersOf } from '../services/core/index.js';
import { resolveConfig } from './support/families.js';

// `x-mcp-header` (MCP 2026-07-28): which schema marks are valid, and how `Mcp-Param-*` headers are
// checked against the arguments they mirror.

const schema = (properties: Record<string, unknown>, extra: Record<string, unknown> = {}) => ({
  type: 'object',
  properties,
  ...extra,
});

describe('x-mcp-header declarations', () => {
  it('finds marks on properties reached through properties, at any depth', () => {
    expect(
      paramHeadersOf(
        schema({
          region: { type: 'string', 'x-mcp-header': 'Region' },
          job: { type: 'object', properties: { priority: { type: 'integer', 'x-mcp-header': 'Priority' } } },
          plain: { type: 'string' },
        }),
      ),
    ).toEqual([
      { path: ['region'], header: 'Region', type: 'string' },
      { path: ['job', 'priority'], header: 'Priority', type: 'integer' },
    ]);
    expect(paramHeadersOf(schema({ a: { type: 'string' } }))).toEqual([]);
  });

  it.each([
    ['under items', schema({ list: { type: 'array', items: { type: 'string', 'x-mcp-header': 'X' } } })],
    ['under anyOf', schema({}, { anyOf: [{ properties: { a: { type: 'string', 'x-mcp-header': 'A' } } }] })],
    ['under $defs', schema({}, { $defs: { d: { type: 'string', 'x-mcp-header': 'D' } } })],
    ['on the root', { type: 'object', 'x-mcp-header': 'Root' }],
    ['with a space in the name', schema({ a: { type: 'string', 'x-mcp-header': 'My Header' } })],
    ['empty', schema({ a: { type: 'string', 'x-mcp-header': '' } })],
    ['not a string', schema({ a: { type: 'string', 'x-mcp-header': 7 } })],
    ['on an object', schema({ a: { type: 'object', 'x-mcp-header': 'A' } })],
    ['without a type', schema({ a: { 'x-mcp-header': 'A' } })],
    [
      'twice, in another case',
      schema({
        a: { type: 'string', 'x-mcp-header': 'Zone' },
        b: { type: 'string', 'x-mcp-header': 'zone' },
      }),
    ],
  ])('refuses a mark %s, naming the property', (_, bad) => {
    const problem = paramHeadersOf(bad);
    expect(typeof problem).toBe('string');
    expect(problem).toMatch(/x-mcp-header/);
  });

  it('names where a misplaced mark sits', () => {
    expect(
      paramHeadersOf(schema({ list: { type: 'array', items: { type: 'string', 'x-mcp-header': 'X' } } })),
    ).toMatch(/property list\.items:/);
    expect(
      paramHeadersOf(
        schema({}, { anyOf: [{}, { properties: { a: { type: 'string', 'x-mcp-header': 'A' } } }] }),
      ),
    ).toMatch(/property anyOf\.1\.a:/);
  });

  it('stops a config whose tool schema carries a bad mark at load, naming the tool', () => {
    const yaml = `
tools:
  - name: routed
    template: generate_text
    inputSchema:
      type: object
      properties:
        zones: { type: array, items: { type: string, x-mcp-header: Zone } }
`;
    let thrown: unknown;
    try {
      resolveConfig(yaml, {});
    } catch (err) {
      thrown = err;
    }
    expect(thrown).toBeInstanceOf(ClusterError);
    expect((thrown as ClusterError).code).toBe('INVALID_CONFIG');
    expect((thrown as ClusterError).message).toMatch(/routed|tools/);
    expect((thrown as ClusterError).message).toMatch(/x-mcp-header/);
  });
});

describe('Mcp-Param-* headers against the arguments', () => {
  const declared: ParamHeader[] = [
    { path: ['region'], header: 'Region', type: 'string' },
    { path: ['opts', 'n'], header: 'N', type: 'integer' },
    { path: ['fast'], header: 'Fast', type: 'boolean' },
  ];
  const check = (args: unknown, headers: Record<string, string>) =>
    checkParamHeaders(declared, args, (name) => headers[name]);
  const b64 = (text: string) => `=?base64?${Buffer.from(text, 'utf8').toString('base64')}?=`;

  it('accepts headers equal to the arguments, as sent or Base64-wrapped', () => {
    expect(
      check(
        { region: 'eu-west', opts: { n: 42 }, fast: true },
        {
          'mcp-param-region': 'eu-west',
          'mcp-param-n': '42',
          'mcp-param-fast': 'true',
        },
      ),
    ).toBeUndefined();
    expect(check({ region: 'Zürich ☃' }, { 'mcp-param-region': b64('Zürich ☃') })).toBeUndefined();
    // Numbers compare as numbers; a value without the wrapper is literal.
    expect(check({ opts: { n: 42 } }, { 'mcp-param-n': '42.0' })).toBeUndefined();
    expect(check({ region: 'SGVsbG8=' }, { 'mcp-param-region': 'SGVsbG8=' })).toBeUndefined();
    expect(
      check({ region: '=?base64?SGVsbG8=' }, { 'mcp-param-region': '=?base64?SGVsbG8=' }),
    ).toBeUndefined();
    // Arguments the body leaves out (or sets null) need no header; a header for one is ignored.
    expect(check({ region: null }, { 'mcp-param-n': '3' })).toBeUndefined();
    expect(check({ region: '' }, { 'mcp-param-region': '' })).toBeUndefined();
  });

  it.each([
    ['missing', { region: 'eu' }, {}],
    ['different', { region: 'eu' }, { 'mcp-param-region': 'us' }],
    ['bad Base64 padding', { region: 'Hello' }, { 'mcp-param-region': '=?base64?SGVsbG8?=' }],
    ['bad Base64 characters', { region: 'Hello' }, { 'mcp-param-region': '=?base64?SGVs!!!bG8=?=' }],
    ['Base64 of bytes that are not UTF-8', { region: 'x' }, { 'mcp-param-region': '=?base64?/w==?=' }],
    ['a different number', { opts: { n: 42 } }, { 'mcp-param-n': '43' }],
    ['a boolean spelled otherwise', { fast: false }, { 'mcp-param-fast': 'False' }],
  ])('refuses a header %s with HEADER_MISMATCH naming it', (_, args, headers) => {
    const error = check(args, headers as Record<string, string>);
    expect(error).toBeInstanceOf(ClusterError);
    expect(error?.code).toBe('HEADER_MISMATCH');
    expect(error?.message).toMatch(/Mcp-Param-(Region|N|Fast)/);
  });
});
