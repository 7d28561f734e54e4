import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import protobuf from 'protobufjs';

// A test OTLP/HTTP trace receiver: what a collector's `otlphttp` receiver does, for one suite. It
// takes `POST /v1/traces` in both OTLP/HTTP encodings (protobuf, the default, and JSON) and keeps
// every span, flattened with its resource's service name. Any other body is answered 415, so an
// exporter sending something else fails visibly.

/**
 * The part of OTLP's ExportTraceServiceRequest the tests read (field numbers from
 * opentelemetry/proto/collector/trace/v1 and trace/v1): decoded to the same shape as the JSON
 * encoding, ids as hex.
 */
const OTLP = protobuf
  .parse(`
syntax = "proto3";
message AnyValue { oneof value { string string_value = 1; bool bool_value = 2; int64 int_value = 3; double double_value = 4; } }
message KeyValue { string key = 1; AnyValue value = 2; }
message Resource { repeated KeyValue attributes = 1; }
message Link { bytes trace_id = 1; bytes span_id = 2; }
message Status { int32 code = 3; }
message Span {
  bytes trace_id = 1; bytes span_id = 2; bytes parent_span_id = 4; string name = 5; int32 kind = 6;
  fixed64 start_time_unix_nano = 7; fixed64 end_time_unix_nano = 8; repeated KeyValue attributes = 9;
  repeated Link links = 13; Status status = 15;
}
message ScopeSpans { repeated Span spans = 2; }
message ResourceSpans { Resource resource = 1; repeated ScopeSpans scope_spans = 2; }
message ExportTraceServiceRequest { repeated ResourceSpans resource_spans = 1; }
`)
  .root.lookupType('ExportTraceServiceRequest');

/** Decodes a protobuf export request to the JSON encoding's shape (ids as hex, times as strings). */
function fromProtobuf(body: Buffer): ExportRequest {
  const hexOf = (value: unknown) => Buffer.from((value as Uint8Array | undefined) ?? []).toString('hex');
  const request = OTLP.toObject(OTLP.decode(body), { longs: String }) as ExportRequest;
  for (const resourceSpans of request.resourceSpans ?? []) {
    for (const scope of resourceSpans.scopeSpans ?? []) {
      for (const span of scope.spans ?? []) {
        span.traceId = hexOf(span.traceId);
        span.spanId = hexOf(span.spanId);
        span.parentSpanId = hexOf(span.parentSpanId);
        for (const link of span.links ?? []) {
          link.traceId = hexOf(link.traceId);
          link.spanId = hexOf(link.spanId);
        }
      }
    }
  }
  return request;
}

/** One received span, as the OTLP JSON encoding carries it (ids as hex, times as nanoseconds). */
export interface ReceivedSpan {
  /** `service.name` of the resource that sent the span. */
  service: string;
  traceId: string;
  spanId: string;
  /** Empty for a root span. */
  parentSpanId: string;
  name: string;
  /** OTLP SpanKind: 1 internal, 2 server, 3 client, 4 producer, 5 consumer. */
  kind: number;
  startNs: bigint;
  endNs: bigint;
  /** Attribute values, strings, numbers and booleans as they were sent. */
  attributes: Record<string, string | number | boolean>;
  links: { traceId: string; spanId: string }[];
  /** OTLP status code: 0 unset, 1 ok, 2 error. */
  statusCode: number;
}

/** OTLP SpanKind numbers. */
export const KIND = { internal: 1, server: 2, client: 3, producer: 4, consumer: 5 } as const;

/** A running receiver. */
export interface OtlpReceiver {
  /** Base URL for OTEL_EXPORTER_OTLP_ENDPOINT, e.g. `http://127.0.0.1:40123`. */
  readonly url: string;
  /** Every span received so far. */
  readonly spans: readonly ReceivedSpan[];
  /** Export requests received, and of those the ones refused (not JSON, not an export request). */
  readonly requests: number;
  readonly refused: number;
  /** Export requests taken, by OTLP/HTTP encoding. */
  readonly byEncoding: { json: number; protobuf: number };
  close(): Promise<void>;
}

interface AnyValue {
  stringValue?: string;
  intValue?: string | number;
  doubleValue?: number;
  boolValue?: boolean;
}
interface KeyValue {
  key: string;
  value?: AnyValue;
}
interface JsonSpan {
  traceId?: string;
  spanId?: string;
  parentSpanId?: string;
  name?: string;
  kind?: number;
  startTimeUnixNano?: string | number;
  endTimeUnixNano?: string | number;
  attributes?: KeyValue[];
  links?: { traceId?: string; spanId?: string }[];
  status?: { code?: number };
}
interface ExportRequest {
  resourceSpans?: {
    resource?: { attributes?: KeyValue[] };
    scopeSpans?: { spans?: JsonSpan[] }[];
  }[];
}

function anyValueOf(value: AnyValue | undefined): string | number | boolean {
  if (!value) return '';
  if (value.stringValue !== undefined) return value.stringValue;
  if (value.intValue !== undefined) return Number(value.intValue);
  if (value.doubleValue !== undefined) return value.doubleValue;
  if (value.boolValue !== undefined) return value.boolValue;
  return JSON.stringify(value);
}

function attributesOf(list: KeyValue[] | undefined): Record<string, string | number | boolean> {
  return Object.fromEntries((list ?? []).map((kv) => [kv.key, anyValueOf(kv.value)]));
}

/** Starts a receiver on a free port of 127.0.0.1. */
export async function startOtlpReceiver(): Promise<OtlpReceiver> {
  const spans: ReceivedSpan[] = [];
  let requests = 0;
  let refused = 0;
  let jsonRequests = 0;
  let protobufRequests = 0;
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      requests += 1;
      if (req.method !== 'POST' || req.url !== '/v1/traces') {
        refused += 1;
        res.writeHead(404).end();
        return;
      }
      const type = String(req.headers['content-type']);
      const json = type.startsWith('application/json');
      if (!json && !type.startsWith('application/x-protobuf')) {
        refused += 1;
        res.writeHead(415).end();
        return;
      }
      let body: ExportRequest;
      try {
        const raw = Buffer.concat(chunks);
        body = json ? (JSON.parse(raw.toString('utf8')) as ExportRequest) : fromProtobuf(raw);
        if (json) jsonRequests += 1;
        else protobufRequests += 1;
      } catch {
        refused += 1;
        res.writeHead(400).end();
        return;
      }
      for (const resourceSpans of body.resourceSpans ?? []) {
        const service = String(attributesOf(resourceSpans.resource?.attributes)['service.name'] ?? '');
        for (const scope of resourceSpans.scopeSpans ?? []) {
          for (const span of scope.spans ?? []) {
            spans.push({
              service,
              traceId: span.traceId ?? '',
              spanId: span.spanId ?? '',
              parentSpanId: span.parentSpanId ?? '',
              name: span.name ?? '',
              kind: span.kind ?? 0,
              startNs: BigInt(span.startTimeUnixNano ?? 0),
              endNs: BigInt(span.endTimeUnixNano ?? 0),
              attributes: attributesOf(span.attributes),
              links: (span.links ?? []).map((l) => ({ traceId: l.traceId ?? '', spanId: l.spanId ?? '' })),
              statusCode: span.status?.code ?? 0,
            });
          }
        }
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    spans,
    get requests() {
      return requests;
    },
    get refused() {
      return refused;
    },
    get byEncoding() {
      return { json: jsonRequests, protobuf: protobufRequests };
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** Duration of a span in milliseconds. */
export function durationMs(span: ReceivedSpan): number {
  return Number(span.endNs - span.startNs) / 1e6;
}
