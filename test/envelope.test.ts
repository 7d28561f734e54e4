import protobuf from 'protobufjs';
import { describe, expect, it } from 'vitest';
import { protoPath } from '../services/core/envelope.js';
import {
  decodeToolCall,
  encodeToolCall,
  isExpired,
  newCallId,
  PRIORITIES,
  type ToolCall,
} from '../services/core/index.js';

function fullCall(overrides: Partial<ToolCall> = {}): ToolCall {
  return {
    callId: '0f8fad5b-d9cb-469f-a165-70867728950e',
    tool: 'generate_text',
    pool: 'inference',
    arguments: { prompt: 'Hello', max_tokens: 64, temperature: 0.2 },
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
    const decoded = decodeToolCall(encodeToolCall(fullCall({ arguments: args })));
    expect(decoded.arguments).toEqual(args);
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
      arguments: {},
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

  it('throws when the arguments are not a JSON object', () => {
    for (const args of [[1, 2], 'text', 7, null]) {
      const bytes = encodeToolCall(fullCall({ arguments: args as unknown as Record<string, unknown> }));
      expect(() => decodeToolCall(bytes)).toThrow();
    }
  });

  it('throws when the arguments are not JSON', () => {
    const type = protobuf.loadSync(protoPath()).lookupType('mcpcluster.v1.ToolCall');
    const bytes = type.encode({ callId: 'c', tool: 't', pool: 'p', argumentsJson: '{not json' }).finish();
    expect(() => decodeToolCall(bytes)).toThrow();
  });

  it('reads an unknown wire priority as normal', () => {
    const type = protobuf.loadSync(protoPath()).lookupType('mcpcluster.v1.ToolCall');
    const bytes = type.encode({ callId: 'c', tool: 't', pool: 'p', priority: 7 }).finish();
    const call = decodeToolCall(bytes);
    expect(call.priority).toBe('normal');
    expect(call.arguments).toEqual({});
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
