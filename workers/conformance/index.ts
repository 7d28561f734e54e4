/**
 * The `conformance` family: the fixture tools the official MCP conformance suite
 * (`@modelcontextprotocol/conformance`) calls, served like every tool (ingress → queue → worker →
 * gRPC delivery), so the suite scores the whole path: text, image and audio bytes, embedded
 * resources, mixed content, tool errors, progress and log notifications, a JSON Schema 2020-12 input
 * schema, and input from the caller (multi-round-trip `InputRequiredResult`; elicitation, sampling
 * and roots for 2025-era sessions, asked by the ingress: see input.ts). Off by default: a pool `conformance` in the file, `conformance: { enabled: true }`, or
 * `mcp-cluster up --conformance` switches it on. The tools need no GPU; the pool's backend kind
 * `conformance` only has to answer its health probe (under `up`, the simulated backend does).
 */

import { ClusterError, type JsonSchema, type ToolFamily } from '../../services/core/index.js';
import type { AdapterContext, InputToolAdapter, ToolAdapter, ToolResult } from '../runtime/index.js';
import { INPUT_FIXTURES } from './input.js';
import { CONFORMANCE_PNG, CONFORMANCE_WAV } from './media.js';

export { CONFORMANCE_PNG, CONFORMANCE_WAV } from './media.js';

/** Texts the fixtures answer with (the suite's documented examples). */
export const CONFORMANCE_TEXT = {
  simple: 'This is a simple text response for testing.',
  error: 'This tool intentionally returns an error for testing',
  embedded: 'This is an embedded resource content.',
  mixed: 'Multiple content types test:',
  mixedResource: '{"test":"data","value":123}',
  progress: 'Progress test completed',
  logging: 'Logging test completed',
  schema: 'JSON Schema 2020-12 tool called',
} as const;

/** Pause between the progress fixture's notifications, in milliseconds (the suite asks for ~50). */
const PROGRESS_STEP_MS = 50;

const NO_ARGUMENTS: JsonSchema = { type: 'object', properties: {}, additionalProperties: false };

/**
 * The input schema of `json_schema_2020_12_tool`, the suite's `JSON_SCHEMA_2020_12_FIXTURE` key for
 * key: its `json-schema-2020-12` scenario checks that `$schema`, `$defs` (with `address`) and
 * `additionalProperties: false` reach `tools/list` as written (SEP-1613), and on 2026-07-28 also
 * `allOf` holding an `anyOf`, `if`/`then`/`else` and the `$anchor` inside `$defs.address`
 * (SEP-2106). A valid call therefore names `phone` or `email`, and `email` unless `contactMethod`
 * is `phone`.
 */
export const JSON_SCHEMA_2020_12_INPUT: JsonSchema = {
  $schema: 'https://json-schema.org/draft/2020-12/schema',
  type: 'object',
  $defs: {
    address: {
      $anchor: 'addressDef',
      type: 'object',
      properties: { street: { type: 'string' }, city: { type: 'string' } },
    },
  },
  properties: {
    name: { type: 'string' },
    address: { $ref: '#/$defs/address' },
    contactMethod: { type: 'string', enum: ['phone', 'email'] },
    phone: { type: 'string' },
    email: { type: 'string' },
  },
  allOf: [{ anyOf: [{ required: ['phone'] }, { required: ['email'] }] }],
  if: { properties: { contactMethod: { const: 'phone' } }, required: ['contactMethod'] },
  // biome-ignore lint/suspicious/noThenProperty: the JSON Schema keyword; an object, so never a thenable.
  then: { required: ['phone'] },
  else: { required: ['email'] },
  additionalProperties: false,
};

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(new ClusterError('CANCELLED', 'the call was cancelled'));
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(new ClusterError('CANCELLED', 'the call was cancelled'));
    };
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

/** An adapter answering every call with `result` (fresh per call: media bytes are not shared). */
function fixed(result: () => ToolResult): ToolAdapter {
  return { run: async () => result() };
}

const progressAdapter: ToolAdapter = {
  async run(ctx: AdapterContext): Promise<ToolResult> {
    // 0, 50, 100 of 100 with pauses between, as the suite's progress scenario expects.
    for (const progress of [0, 50, 100]) {
      if (progress > 0) await sleep(PROGRESS_STEP_MS, ctx.signal);
      ctx.progress({ progress, total: 100 });
    }
    return { content: [{ type: 'text', text: CONFORMANCE_TEXT.progress }] };
  },
};

const loggingAdapter: ToolAdapter = {
  async run(ctx: AdapterContext): Promise<ToolResult> {
    // Three info messages ~50 ms apart while the call runs, as the suite's logging scenario expects.
    const messages = ['Tool execution started', 'Tool processing data', 'Tool execution completed'];
    for (const [i, message] of messages.entries()) {
      if (i > 0) await sleep(PROGRESS_STEP_MS, ctx.signal);
      ctx.log('info', message);
    }
    return { content: [{ type: 'text', text: CONFORMANCE_TEXT.logging }] };
  },
};

/** Fixture adapters by template (and tool) name. */
const adapters: Record<string, { description: string; input?: JsonSchema; adapter: InputToolAdapter }> = {
  test_simple_text: {
    description: 'Conformance fixture: returns one text block.',
    adapter: fixed(() => ({ content: [{ type: 'text', text: CONFORMANCE_TEXT.simple }] })),
  },
  test_image_content: {
    description: 'Conformance fixture: returns a 1x1 red PNG image block.',
    // Raw bytes: they travel as media bytes to the ingress, which writes them base64.
    adapter: fixed(() => ({ content: [{ type: 'image', data: CONFORMANCE_PNG(), mimeType: 'image/png' }] })),
  },
  test_audio_content: {
    description: 'Conformance fixture: returns a short WAV audio block.',
    adapter: fixed(() => ({ content: [{ type: 'audio', data: CONFORMANCE_WAV(), mimeType: 'audio/wav' }] })),
  },
  test_embedded_resource: {
    description: 'Conformance fixture: returns an embedded text resource.',
    adapter: fixed(() => ({
      content: [
        {
          type: 'resource',
          resource: {
            uri: 'test://embedded-resource',
            mimeType: 'text/plain',
            text: CONFORMANCE_TEXT.embedded,
          },
        },
      ],
    })),
  },
  test_multiple_content_types: {
    description: 'Conformance fixture: returns text, image and embedded resource blocks.',
    adapter: fixed(() => ({
      content: [
        { type: 'text', text: CONFORMANCE_TEXT.mixed },
        { type: 'image', data: CONFORMANCE_PNG(), mimeType: 'image/png' },
        {
          type: 'resource',
          resource: {
            uri: 'test://mixed-content-resource',
            mimeType: 'application/json',
            text: CONFORMANCE_TEXT.mixedResource,
          },
        },
      ],
    })),
  },
  test_error_handling: {
    description: 'Conformance fixture: always answers with a tool error (isError).',
    adapter: fixed(() => ({ isError: true, content: [{ type: 'text', text: CONFORMANCE_TEXT.error }] })),
  },
  test_tool_with_progress: {
    description: 'Conformance fixture: reports progress 0, 50 and 100 of 100, then returns text.',
    adapter: progressAdapter,
  },
  test_tool_with_logging: {
    description: 'Conformance fixture: sends three info log messages while it runs, then returns text.',
    adapter: loggingAdapter,
  },
  // The name the 2026-07-28 suite calls it by (it checks no log is sent without a `_meta` level).
  test_logging_tool: {
    description: 'Conformance fixture: sends three info log messages while it runs, then returns text.',
    adapter: loggingAdapter,
  },
  json_schema_2020_12_tool: {
    description: 'Tool with JSON Schema 2020-12 features',
    input: JSON_SCHEMA_2020_12_INPUT,
    adapter: fixed(() => ({ content: [{ type: 'text', text: CONFORMANCE_TEXT.schema }] })),
  },
  test_x_mcp_header: {
    description:
      'Conformance fixture: its region argument is mirrored in the Mcp-Param-Region header (x-mcp-header), which the ingress checks.',
    input: {
      type: 'object',
      properties: {
        region: { type: 'string', description: 'Where to run', 'x-mcp-header': 'Region' },
      },
      required: ['region'],
    },
    adapter: {
      run: async (ctx) => ({ content: [{ type: 'text', text: `Region: ${String(ctx.arguments.region)}` }] }),
    },
  },
  ...INPUT_FIXTURES,
};

/** Names of the fixture tools (each served by the template of the same name). */
export const CONFORMANCE_TOOLS: readonly string[] = Object.keys(adapters);

/** The pool (and backend kind) the fixture tools run in. */
export const CONFORMANCE_POOL = 'conformance';

export const conformanceFamily: ToolFamily<InputToolAdapter> = {
  name: 'conformance',
  // Nothing is sent to the endpoint; it only has to answer the worker's health probe.
  backends: { conformance: { healthPath: '/health', endpointConcurrency: 64 } },
  templates: Object.fromEntries(
    Object.entries(adapters).map(([name, spec]) => [
      name,
      {
        description: spec.description,
        backends: ['conformance'],
        inputSchema: () => spec.input ?? NO_ARGUMENTS,
        adapter: () => spec.adapter,
      },
    ]),
  ),
  defaults: {
    pool: CONFORMANCE_POOL,
    backend: 'conformance',
    optIn: true,
    tools: CONFORMANCE_TOOLS.map((name) => ({ name, template: name, model: 'conformance', deadline: '30s' })),
  },
};
