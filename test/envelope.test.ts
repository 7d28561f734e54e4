import protobuf from 'protobufjs';
import { describe, expect, it } from 'vitest';
import {
  type Chunk,
  encodeArguments,
  finalToJson,
  isExpired,
  newCallId,
  type Order,
  PRIORITIES,
  parseArguments,
  type ToolCall,
  type ToolResult,
  toFinal,
} from '../services/core/index.js';
import {
  decodeToolCall,
  deserializeChunk,
  deserializeOrder,
  encodeToolCall,
  protoPath,
  serializeChunk,
  serializeOrder,
} from '../services/protobuf/index.js';

function fullCall(overrides: Partial<ToolCall> = {}): ToolCall {
  return {
    callId: '0f8fad5b-d9cb-469f-a165-70867728950e',
    tool: 'generate_text',
    pool: 'inference',
    argumentsJson: encodeArguments({ prompt: 'Hello', max_tokens: 64, temperature: 0.2 }),
    tenant: 'acme',
    sessionKey: 'sess-42',
    priority: 'normal',
    deadlineUnixMs: 1_900_000_000_123,
    attempt: 3,
    replyTo: '10.0.0.7:50051',
    traceContext: {
      traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01',
      tracestate: 'vendor=opaque',
    },
    enqueuedUnixMs: 1_899_999_999_000,
    wantsProgress: true,
    principal: 'https://auth.example.com#agent-7',
    scopes: ['mcp', 'pool:embeddings'],
    ...overrides,
  };
}

describe('encodeToolCall / decodeToolCall', () => {
  it('round-trips a full call', () => {
    const call = fullCall();
    const bytes = encodeToolCall(call);
    expect(bytes).toBeInstanceOf(Uint8Array);
    expect(bytes.length).toBeGreaterThan(0);
    expect(decodeToolCall(bytes)).toEqual(call);
  });

  it.each(PRIORITIES)('round-trips priority %s', (priority) => {
    expect(decodeToolCall(encodeToolCall(fullCall({ priority }))).priority).toBe(priority);
  });

  it('lists priorities highest first', () => {
    expect(PRIORITIES).toEqual(['high', 'normal', 'low']);
  });

  it('puts priorities on the wire as the proto enum says', () => {
    const type = protobuf.loadSync(protoPath()).lookupType('mcpcluster.v1.ToolCall');
    const wireName = (priority: ToolCall['priority']) =>
      (
        type.toObject(type.decode(encodeToolCall(fullCall({ priority }))), { enums: String }) as {
          priority: string;
        }
      ).priority;
    expect(wireName('high')).toBe('PRIORITY_HIGH');
    expect(wireName('normal')).toBe('PRIORITY_NORMAL');
    expect(wireName('low')).toBe('PRIORITY_LOW');
  });

  it('round-trips unicode and nested arguments exactly', () => {
    const args = {
      prompt: 'Grüße, 世界! 👋🏽 \u0000 "quoted" \\ back\nslash',
      nested: { list: [1, 2.5, -3, null, true, 'x'], deep: { deeper: { deepest: ['ünï', { k: 'v' }] } } },
      empty: {},
      emptyList: [],
      'key with spaces & ümlauts': 'ok',
      big: Number.MAX_SAFE_INTEGER,
      negative: -0.000_001,
    };
    const decoded = decodeToolCall(encodeToolCall(fullCall({ argumentsJson: encodeArguments(args) })));
    expect(parseArguments(decoded.argumentsJson)).toEqual(args);
  });

  it('round-trips unicode in string fields and trace context', () => {
    const call = fullCall({
      tenant: 'тенант-ü',
      sessionKey: '会话🔑',
      traceContext: { traceparent: '00-aa-bb-01', tracestate: 'k=ü', baggage: 'user=名前' },
    });
    expect(decodeToolCall(encodeToolCall(call))).toEqual(call);
  });

  it('round-trips empty optional parts and zero values', () => {
    const call = fullCall({
      argumentsJson: encodeArguments({}),
      tenant: '',
      sessionKey: '',
      replyTo: '',
      traceContext: {},
      attempt: 0,
      deadlineUnixMs: 0,
      enqueuedUnixMs: 0,
      wantsProgress: false,
    });
    expect(decodeToolCall(encodeToolCall(call))).toEqual(call);
  });

  it('keeps epoch milliseconds beyond 32 bits', () => {
    const deadline = 8_640_000_000_000; // far future, well above 2^32
    const decoded = decodeToolCall(
      encodeToolCall(fullCall({ deadlineUnixMs: deadline, enqueuedUnixMs: deadline - 1 })),
    );
    expect(decoded.deadlineUnixMs).toBe(deadline);
    expect(decoded.enqueuedUnixMs).toBe(deadline - 1);
  });

  it('decodes epoch milliseconds as plain numbers, not Long objects', () => {
    const decoded = decodeToolCall(encodeToolCall(fullCall()));
    expect(typeof decoded.deadlineUnixMs).toBe('number');
    expect(typeof decoded.enqueuedUnixMs).toBe('number');
  });

  it('decodes into a plain object that spreads with every field', () => {
    const decoded = decodeToolCall(encodeToolCall(fullCall({ sessionKey: '', wantsProgress: false })));
    // The queues spread a decoded call to set its attempt: defaults must be own properties.
    expect({ ...decoded, attempt: 4 }).toEqual({
      ...fullCall({ sessionKey: '', wantsProgress: false }),
      attempt: 4,
    });
  });

  it('decodes an envelope the decoder did not write itself (fresh bytes, same content)', () => {
    const bytes = encodeToolCall(fullCall());
    const copy = new Uint8Array(bytes); // e.g. as read back from a broker
    expect(decodeToolCall(copy)).toEqual(fullCall());
  });

  it('throws on an envelope lacking a call id', () => {
    expect(() => decodeToolCall(encodeToolCall(fullCall({ callId: '' })))).toThrow(/call id/);
  });

  it('throws on an envelope lacking a tool or pool', () => {
    expect(() => decodeToolCall(encodeToolCall(fullCall({ tool: '' })))).toThrow();
    expect(() => decodeToolCall(encodeToolCall(fullCall({ pool: '' })))).toThrow();
  });

  it('throws on empty bytes (every field missing)', () => {
    expect(() => decodeToolCall(new Uint8Array())).toThrow();
  });

  it.each([
    ['truncated varint', [0xff, 0xff, 0xff, 0xff]],
    ['a length past the end', [0x0a, 0x7f, 0x41]],
    ['an invalid wire type', [0x0f, 0x01, 0x02]],
    ['text', [...new TextEncoder().encode('not a protobuf message at all')]],
  ])('throws on garbage bytes: %s', (_label, bytes) => {
    expect(() => decodeToolCall(Uint8Array.from(bytes))).toThrow();
  });

  it('throws on an envelope truncated inside a field', () => {
    // Field 1 (call id) is a 36-byte string: cutting inside it leaves a length past the end.
    // (A cut exactly at a field boundary is indistinguishable from a shorter message in protobuf.)
    const bytes = encodeToolCall(fullCall());
    expect(() => decodeToolCall(bytes.subarray(0, 10))).toThrow();
    expect(() => decodeToolCall(bytes.subarray(0, 1))).toThrow();
  });

  it('reads absent arguments and an unknown wire priority as no arguments and normal', () => {
    const type = protobuf.loadSync(protoPath()).lookupType('mcpcluster.v1.ToolCall');
    const bytes = type.encode({ callId: 'c', tool: 't', pool: 'p', priority: 7 }).finish();
    const call = decodeToolCall(bytes);
    expect(call.priority).toBe('normal');
    expect(call.argumentsJson).toBeInstanceOf(Uint8Array);
    expect(parseArguments(call.argumentsJson)).toEqual({});
  });
});

describe('encodeArguments / parseArguments', () => {
  it('round-trips arguments as UTF-8 JSON', () => {
    const args = { prompt: 'Grüße 👋🏽', n: 3, nested: { list: [1, null, 'x'] } };
    const bytes = encodeArguments(args);
    expect(new TextDecoder().decode(bytes)).toBe(JSON.stringify(args));
    expect(parseArguments(bytes)).toEqual(args);
  });

  it('reads no bytes as no arguments', () => {
    expect(parseArguments(new Uint8Array())).toEqual({});
  });

  it('parses a view into a larger buffer by its own bytes only', () => {
    const whole = new TextEncoder().encode('xx{"a":1}yy');
    expect(parseArguments(whole.subarray(2, 9))).toEqual({ a: 1 });
  });

  it('throws when the arguments are not a JSON object', () => {
    for (const text of ['[1,2]', '"text"', '7', 'null']) {
      expect(() => parseArguments(new TextEncoder().encode(text))).toThrow(/not a JSON object/);
    }
  });

  it('throws when the arguments are not JSON', () => {
    expect(() => parseArguments(new TextEncoder().encode('{not json'))).toThrow();
  });
});

describe('delivery chunks and orders', () => {
  it('round-trips a final chunk with its media as bytes and its timing', () => {
    const png = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0, 1, 2, 255]);
    const chunk: Chunk = {
      callId: 'c-1',
      attempt: 2,
      final: { jsonParts: ['{"content":[{"data":"', '"}]}'], media: [png], metaJson: '', isError: false },
      timing: { queueWaitMs: 1.5, backendMs: 20.25, batchWaitMs: 0, sentUnixMs: 1_900_000_000_123 },
    };
    const got = deserializeChunk(serializeChunk(chunk));
    expect(got.body).toBe('final');
    expect(got.callId).toBe('c-1');
    expect(got.attempt).toBe(2);
    expect(got.final?.jsonParts).toEqual(chunk.final?.jsonParts);
    expect(Buffer.from(got.final?.media[0] ?? [])).toEqual(png);
    expect(got.timing).toMatchObject(chunk.timing ?? {});
    expect(typeof got.timing?.sentUnixMs).toBe('number');
  });

  it.each([
    ['accepted', { accepted: { workerId: 'w-1' } }],
    ['progress', { progress: { progress: 3, total: 0, message: '' } }],
    ['error', { error: { code: 'BACKEND_UNAVAILABLE', message: 'down' } }],
  ] as const)('names the body of a %s chunk', (body, member) => {
    const got = deserializeChunk(serializeChunk({ callId: 'c', attempt: 1, ...member }));
    expect(got.body).toBe(body);
    expect(got[body]).toMatchObject(member[body as keyof typeof member] as object);
    expect(got.timing ?? undefined).toBeUndefined();
  });

  it.each([
    ['delivered', { delivered: { known: false } }],
    ['cancel', { cancel: { reason: 'client' } }],
  ] as const)('round-trips a %s order', (body, member) => {
    const order: Order = { callId: 'c-9', ...member };
    const got = deserializeOrder(serializeOrder(order));
    expect(got.body).toBe(body);
    expect(got.callId).toBe('c-9');
    expect(got[body]).toMatchObject(member[body as keyof typeof member] as object);
  });

  it('throws on bytes that are not a chunk', () => {
    expect(() => deserializeChunk(Uint8Array.from([0x0a, 0x7f, 0x41]))).toThrow();
  });
});

describe('toFinal / finalToJson', () => {
  const TIMING = '"mcp-cluster/timing":{"queueWaitMs":1,"batchWaitMs":0,"backendMs":2,"deliveryMs":0}';
  const timing = JSON.parse(`{${TIMING}}`) as Record<string, unknown>;
  const roundTrip = (result: ToolResult, added = TIMING) => {
    const final = toFinal(result);
    const json = finalToJson(
      deserializeChunk(serializeChunk({ callId: 'c', attempt: 1, final })).final!,
      added,
    );
    expect(json).toBeDefined();
    return { final, parsed: JSON.parse(json ?? '') as Record<string, unknown> };
  };

  it('gives back a text result with the added _meta', () => {
    const result = { content: [{ type: 'text', text: 'hi "there"\n' }], structuredContent: { n: [1, 2] } };
    const { final, parsed } = roundTrip(result);
    expect(final.media).toEqual([]);
    expect(parsed).toEqual({ ...result, _meta: timing });
  });

  it('merges the added keys into the result own _meta', () => {
    const result = { content: [], isError: true, _meta: { 'vendor/x': { y: 1 } } };
    const { final, parsed } = roundTrip(result);
    expect(final.isError).toBe(true);
    expect(parsed).toEqual({ content: [], isError: true, _meta: { 'vendor/x': { y: 1 }, ...timing } });
  });

  it('adds no _meta when there is nothing to add', () => {
    const result = { content: [{ type: 'text', text: 'x' }] };
    expect(roundTrip(result, '').parsed).toEqual(result);
    const withMeta = { ...result, _meta: {} };
    expect(roundTrip(withMeta, '').parsed).toEqual(withMeta);
  });

  it('sends image and audio bytes apart and writes them base64', () => {
    const image = Buffer.from('not really a png, but bytes \u0000\u00ff');
    const audio = new Uint8Array([1, 2, 3, 250]);
    const result = {
      content: [
        { type: 'image', data: image, mimeType: 'image/png', annotations: { data: 'x' } },
        { type: 'text', text: 'between' },
        { type: 'audio', data: audio, mimeType: 'audio/wav' },
        { type: 'image', data: 'aGk=', mimeType: 'image/png' },
      ],
    };
    const { final, parsed } = roundTrip(result);
    expect(final.media).toHaveLength(2);
    expect(final.jsonParts.join('')).not.toContain(image.toString('base64'));
    expect(parsed).toEqual({
      content: [
        { type: 'image', data: image.toString('base64'), mimeType: 'image/png', annotations: { data: 'x' } },
        { type: 'text', text: 'between' },
        { type: 'audio', data: Buffer.from(audio).toString('base64'), mimeType: 'audio/wav' },
        { type: 'image', data: 'aGk=', mimeType: 'image/png' },
      ],
      _meta: timing,
    });
  });

  it('refuses parts that do not make a JSON object', () => {
    expect(finalToJson({ jsonParts: ['[1]'], media: [], metaJson: '', isError: false })).toBeUndefined();
    expect(
      finalToJson({ jsonParts: ['{}'], media: [new Uint8Array(1)], metaJson: '', isError: false }),
    ).toBeUndefined();
  });
});

describe('isExpired', () => {
  it('is true at and after the deadline, false before it', () => {
    expect(isExpired({ deadlineUnixMs: 1000 }, 999)).toBe(false);
    expect(isExpired({ deadlineUnixMs: 1000 }, 1000)).toBe(true);
    expect(isExpired({ deadlineUnixMs: 1000 }, 1001)).toBe(true);
  });

  it('defaults to the current time', () => {
    expect(isExpired({ deadlineUnixMs: Date.now() - 60_000 })).toBe(true);
    expect(isExpired({ deadlineUnixMs: Date.now() + 3_600_000 })).toBe(false);
  });

  it('works on a whole call', () => {
    expect(isExpired(fullCall({ deadlineUnixMs: 5 }), 10)).toBe(true);
  });
});

describe('newCallId', () => {
  it('is a random (v4) UUID', () => {
    expect(newCallId()).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  });

  it('is unique', () => {
    const ids = new Set(Array.from({ length: 10_000 }, () => newCallId()));
    expect(ids.size).toBe(10_000);
  });
});
