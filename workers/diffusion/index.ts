import { randomInt, randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import WebSocket from 'ws';
import { ClusterError, type ToolFamily } from '../../services/core/index.js';
import {
  type AdapterContext,
  BackendRefusal,
  type BackendRequestInit,
  type BackendResponse,
  backendRequest,
  postJson,
  readJson,
  type ToolAdapter,
  type ToolResult,
} from '../runtime/index.js';
import { generateImageInput } from './schemas.js';
import { diffusionSettings } from './settings.js';

export { generateImageInput } from './schemas.js';
export type { DiffusionToolSettings } from './settings.js';
export { diffusionSettings } from './settings.js';

// `generate_image` against ComfyUI: an API-format workflow template filled per call, submitted
// with `POST /prompt`, followed over the `/ws` WebSocket (sampler steps become progress), and
// its images read back with `/history` and `/view`. Cancelling removes a queued prompt
// (`POST /queue {delete}`) or interrupts the running one (`POST /interrupt {prompt_id}`).

/** One node of a ComfyUI API-format graph. */
export interface WorkflowNode {
  class_type: string;
  inputs: Record<string, unknown>;
  _meta?: { title?: string };
}

/** A ComfyUI API-format graph: node id → node. */
export type WorkflowGraph = Record<string, WorkflowNode>;

/** A checked workflow template and the nodes each argument goes into, found by class_type. */
export interface Workflow {
  /** The file it came from (for messages). */
  source: string;
  graph: WorkflowGraph;
  /** KSampler nodes: `seed` and `steps`. */
  samplers: string[];
  /** CLIPTextEncode nodes feeding a KSampler's `positive` input: `text` = prompt. */
  positive: string[];
  /** CLIPTextEncode nodes feeding a KSampler's `negative` input: `text` = negative_prompt. */
  negative: string[];
  /** EmptyLatentImage nodes: `width`, `height`. */
  latents: string[];
  /** CheckpointLoaderSimple nodes: `ckpt_name` = the tool's model. */
  checkpoints: string[];
}

/** The node types a generate_image workflow must have. */
export const REQUIRED_NODE_TYPES = [
  'CheckpointLoaderSimple',
  'CLIPTextEncode',
  'EmptyLatentImage',
  'KSampler',
  'SaveImage',
] as const;

/** What one call puts into the template. */
export interface ImageRequest {
  prompt: string;
  negativePrompt: string;
  width: number;
  height: number;
  steps: number;
  seed: number;
  /** Checkpoint file name (`ckpt_name`), the tool's `model`. */
  model: string;
}

/** The shipped default workflow, from the sources and from `dist/` (which has no copy of it). */
function defaultWorkflowPath(): string {
  const candidates = [
    fileURLToPath(new URL('./workflows/default.json', import.meta.url)),
    fileURLToPath(new URL('../../../workers/diffusion/workflows/default.json', import.meta.url)),
  ];
  return candidates.find((path) => existsSync(path)) ?? (candidates[0] as string);
}

function invalidWorkflow(source: string, problem: string, cause?: unknown): ClusterError {
  return new ClusterError('INVALID_CONFIG', `workflow ${source}: ${problem}`, { cause });
}

function isLink(value: unknown): value is [string, number] {
  return (
    Array.isArray(value) && value.length === 2 && typeof value[0] === 'string' && typeof value[1] === 'number'
  );
}

/**
 * Checks a parsed API-format workflow and finds, by class_type, the nodes each argument goes
 * into. Throws ClusterError INVALID_CONFIG naming `source` and the problem (a UI-format export,
 * a missing node type, a KSampler prompt input that does not come from a CLIPTextEncode).
 */
export function parseWorkflow(value: unknown, source: string): Workflow {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw invalidWorkflow(source, 'expected a JSON object of nodes (ComfyUI API format)');
  }
  const raw = value as Record<string, unknown>;
  if (Array.isArray(raw.nodes) || Array.isArray(raw.links)) {
    throw invalidWorkflow(
      source,
      'this is a ComfyUI UI workflow, not the API format; export it from ComfyUI with "Export (API)" / "Save (API Format)"',
    );
  }
  const graph: WorkflowGraph = {};
  for (const [id, node] of Object.entries(raw)) {
    const n = node as { class_type?: unknown; inputs?: unknown } | null;
    if (typeof n !== 'object' || n === null || typeof n.class_type !== 'string') {
      throw invalidWorkflow(source, `node "${id}" has no class_type (is this an API-format workflow?)`);
    }
    if (typeof n.inputs !== 'object' || n.inputs === null || Array.isArray(n.inputs)) {
      throw invalidWorkflow(source, `node "${id}" (${n.class_type}) has no inputs object`);
    }
    graph[id] = node as WorkflowNode;
  }
  const ofType = (type: string) => Object.keys(graph).filter((id) => graph[id]?.class_type === type);
  for (const type of REQUIRED_NODE_TYPES) {
    if (ofType(type).length === 0) {
      throw invalidWorkflow(
        source,
        `has no ${type} node; a generate_image workflow needs ${REQUIRED_NODE_TYPES.join(', ')}`,
      );
    }
  }
  const samplers = ofType('KSampler');
  const textEncoderOf = (sampler: string, input: 'positive' | 'negative'): string => {
    const link = graph[sampler]?.inputs[input];
    const target = isLink(link) ? graph[link[0]] : undefined;
    if (!isLink(link) || target?.class_type !== 'CLIPTextEncode') {
      throw invalidWorkflow(
        source,
        `the ${input} input of KSampler "${sampler}" must be linked to a CLIPTextEncode node (the tool fills its text)`,
      );
    }
    return link[0];
  };
  const positive = [...new Set(samplers.map((s) => textEncoderOf(s, 'positive')))];
  const negative = [...new Set(samplers.map((s) => textEncoderOf(s, 'negative')))];
  const shared = positive.find((id) => negative.includes(id));
  if (shared !== undefined) {
    throw invalidWorkflow(source, `CLIPTextEncode "${shared}" feeds both a positive and a negative input`);
  }
  return {
    source,
    graph,
    samplers,
    positive,
    negative,
    latents: ofType('EmptyLatentImage'),
    checkpoints: ofType('CheckpointLoaderSimple'),
  };
}

/**
 * Reads and checks a workflow file (ComfyUI API format); `path` undefined is the shipped
 * default. Throws ClusterError INVALID_CONFIG naming the file for an unreadable file, bad JSON
 * or a workflow missing a required node type.
 */
export async function loadWorkflow(path?: string): Promise<Workflow> {
  const file = path ?? defaultWorkflowPath();
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw invalidWorkflow(
      file,
      `cannot be read (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`,
      err,
    );
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw invalidWorkflow(file, `is not valid JSON (${(err as Error).message})`, err);
  }
  return parseWorkflow(value, file);
}

/** A copy of the template with one call's arguments filled in. */
export function fillWorkflow(workflow: Workflow, request: ImageRequest): WorkflowGraph {
  const graph = structuredClone(workflow.graph);
  const set = (ids: string[], values: Record<string, unknown>) => {
    for (const id of ids) Object.assign((graph[id] as WorkflowNode).inputs, values);
  };
  set(workflow.samplers, { seed: request.seed, steps: request.steps });
  set(workflow.positive, { text: request.prompt });
  set(workflow.negative, { text: request.negativePrompt });
  set(workflow.latents, { width: request.width, height: request.height });
  set(workflow.checkpoints, { ckpt_name: request.model });
  return graph;
}

/** Loaded workflows by path ('' for the default); a failed load is not kept, so a fix is picked up. */
const workflows = new Map<string, Promise<Workflow>>();

function cachedWorkflow(path: string | undefined): Promise<Workflow> {
  const key = path ?? '';
  let loading = workflows.get(key);
  if (!loading) {
    loading = loadWorkflow(path);
    workflows.set(key, loading);
    loading.catch(() => workflows.delete(key));
  }
  return loading;
}

// ---------------------------------------------------------------------------------------------
// The WebSocket

/** One message from ComfyUI's `/ws`: JSON `{type, data}`, or a binary frame (previews). */
type SocketMessage = { kind: 'json'; type: string; data: Record<string, unknown> } | { kind: 'binary' };

/** A `/ws` connection that buffers messages from the moment it opens. */
class ComfySocket {
  private readonly buffered: SocketMessage[] = [];
  private wake: (() => void) | undefined;
  /** Why the connection ended, once it did. */
  private ended: ClusterError | undefined;

  private constructor(
    private readonly ws: WebSocket,
    base: string,
  ) {
    ws.on('message', (data, isBinary) => {
      if (isBinary) {
        this.buffered.push({ kind: 'binary' });
      } else {
        let parsed: unknown;
        try {
          parsed = JSON.parse(data.toString());
        } catch {
          parsed = undefined;
        }
        const message = parsed as { type?: unknown; data?: unknown } | undefined;
        if (typeof message?.type !== 'string') {
          this.ended ??= new ClusterError(
            'BACKEND_PROTOCOL',
            `ComfyUI at ${base} sent a WebSocket message that is not {type, data} JSON: ${data.toString().slice(0, 80)}`,
          );
          ws.terminate();
        } else {
          const body = typeof message.data === 'object' && message.data !== null ? message.data : {};
          this.buffered.push({ kind: 'json', type: message.type, data: body as Record<string, unknown> });
        }
      }
      this.wake?.();
    });
    ws.on('close', (code, reason) => {
      this.ended ??= new ClusterError(
        'BACKEND_UNAVAILABLE',
        `ComfyUI at ${base} closed the WebSocket (code ${code}${reason.length ? `: ${reason.toString()}` : ''})`,
      );
      this.wake?.();
    });
    ws.on('error', (err) => {
      this.ended ??= new ClusterError(
        'BACKEND_UNAVAILABLE',
        `ComfyUI at ${base} WebSocket failed: ${err.message}`,
        {
          cause: err,
        },
      );
      this.wake?.();
    });
  }

  /** Connects to `/ws?clientId=…`; rejects with BACKEND_UNAVAILABLE, BACKEND_PROTOCOL or CANCELLED. */
  static open(base: string, clientId: string, ctx: AdapterContext): Promise<ComfySocket> {
    const url = new URL(`ws?clientId=${encodeURIComponent(clientId)}`, base);
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url, { handshakeTimeout: ctx.backendTimeoutMs, perMessageDeflate: false });
      const socket = new ComfySocket(ws, base);
      let settled = false;
      const settle = (err?: ClusterError) => {
        if (settled) return;
        settled = true;
        ctx.signal.removeEventListener('abort', onAbort);
        if (err) {
          ws.terminate();
          reject(err);
        } else resolve(socket);
      };
      const onAbort = () => settle(new ClusterError('CANCELLED', 'the call was cancelled'));
      ctx.signal.addEventListener('abort', onAbort, { once: true });
      ws.once('open', () => settle());
      ws.once('unexpected-response', (req, res) => {
        req.destroy();
        const status = res.statusCode ?? 0;
        settle(
          status >= 500 || status === 429
            ? new ClusterError(
                'BACKEND_UNAVAILABLE',
                `ComfyUI at ${base} answered ${status} to the WebSocket /ws`,
              )
            : new ClusterError(
                'BACKEND_PROTOCOL',
                `${base} answered ${status} to the WebSocket /ws: is the pool's endpoint a ComfyUI server?`,
              ),
        );
      });
      ws.once('error', (err: Error & { code?: string }) =>
        settle(
          new ClusterError(
            'BACKEND_UNAVAILABLE',
            `ComfyUI at ${base} is unreachable: ${err.code ?? err.message}`,
            { cause: err },
          ),
        ),
      );
      if (ctx.signal.aborted) onAbort();
    });
  }

  /**
   * The next message, or 'idle' when none came within `timeoutMs`. Throws the reason the
   * connection ended once every buffered message was read, or CANCELLED when `signal` aborts.
   */
  async next(timeoutMs: number, signal: AbortSignal): Promise<SocketMessage | 'idle'> {
    for (;;) {
      if (signal.aborted) throw new ClusterError('CANCELLED', 'the call was cancelled');
      const message = this.buffered.shift();
      if (message) return message;
      if (this.ended) throw this.ended;
      const woke = await new Promise<boolean>((resolve) => {
        const timer = setTimeout(() => done(false), Math.max(0, timeoutMs));
        const onAbort = () => done(true);
        const done = (value: boolean) => {
          clearTimeout(timer);
          signal.removeEventListener('abort', onAbort);
          this.wake = undefined;
          resolve(value);
        };
        this.wake = () => done(true);
        signal.addEventListener('abort', onAbort, { once: true });
      });
      if (!woke && !signal.aborted && this.buffered.length === 0 && !this.ended) return 'idle';
    }
  }

  close(): void {
    this.ended ??= new ClusterError('INTERNAL', 'closed');
    if (this.ws.readyState === WebSocket.OPEN) this.ws.close(1000);
    else this.ws.terminate();
  }
}

// ---------------------------------------------------------------------------------------------
// HTTP calls

interface ImageRef {
  filename: string;
  subfolder: string;
  type: string;
}

/**
 * One request to ComfyUI under the call's signal, with `ctx.backendTimeoutMs` for the whole
 * exchange (status line and body).
 */
async function request(
  ctx: AdapterContext,
  base: string,
  path: string,
  init: Pick<BackendRequestInit, 'method' | 'headers' | 'body'> = {},
): Promise<BackendResponse> {
  const url = new URL(path, base).toString();
  try {
    return await backendRequest(url, {
      ...init,
      signal: ctx.signal,
      timeoutMs: ctx.backendTimeoutMs,
      timeoutCovers: 'answer',
    });
  } catch (err) {
    if (ctx.signal.aborted) throw new ClusterError('CANCELLED', 'the call was cancelled', { cause: err });
    const cause = err as { code?: string; message?: string };
    if ((err as Error).name === 'TimeoutError') {
      throw new ClusterError(
        'BACKEND_UNAVAILABLE',
        `ComfyUI at ${base} did not answer ${init.method ?? 'GET'} /${path.split('?')[0]} within ${ctx.backendTimeoutMs} ms`,
        { cause: err },
      );
    }
    throw new ClusterError(
      'BACKEND_UNAVAILABLE',
      `ComfyUI at ${base} is unreachable: ${cause.code ?? cause.message}`,
      { cause: err },
    );
  }
}

/** GETs JSON; 5xx → BACKEND_UNAVAILABLE, other non-2xx or bad JSON → BACKEND_PROTOCOL. */
async function getJson(ctx: AdapterContext, base: string, path: string): Promise<unknown> {
  const res = await request(ctx, base, path);
  if (!res.ok) {
    const text = await res.text().catch(() => '');
    throw new ClusterError(
      res.status >= 500 ? 'BACKEND_UNAVAILABLE' : 'BACKEND_PROTOCOL',
      `ComfyUI at ${base} answered ${res.status} to GET /${path}${text ? `: ${text.slice(0, 200)}` : ''}`,
    );
  }
  return readJson(res, new URL(path, base).toString(), ctx.signal);
}

/** A short account of ComfyUI's refusal of a prompt: its error and each node's errors. */
function describeRefusal(text: string): string {
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    return text.slice(0, 300);
  }
  const { error, node_errors: nodeErrors } = (body ?? {}) as { error?: unknown; node_errors?: unknown };
  const parts: string[] = [];
  if (typeof error === 'string') parts.push(error);
  else if (typeof error === 'object' && error !== null) {
    const e = error as { type?: unknown; message?: unknown; details?: unknown };
    parts.push(`${String(e.message ?? e.type ?? 'error')}${e.details ? ` (${String(e.details)})` : ''}`);
  }
  if (typeof nodeErrors === 'object' && nodeErrors !== null && !Array.isArray(nodeErrors)) {
    for (const [id, entry] of Object.entries(nodeErrors as Record<string, unknown>)) {
      const { class_type: classType, errors } = (entry ?? {}) as { class_type?: unknown; errors?: unknown };
      for (const e of Array.isArray(errors) ? errors : []) {
        const { message, details } = (e ?? {}) as { message?: unknown; details?: unknown };
        parts.push(
          `node ${id} (${String(classType)}): ${String(message)}${details ? ` [${String(details)}]` : ''}`,
        );
      }
    }
  }
  const summary = parts.join('; ');
  return summary.length > 600 ? `${summary.slice(0, 600)}…` : summary || text.slice(0, 300);
}

/** `POST /prompt`; resolves with the prompt id ComfyUI assigned. */
async function submitPrompt(
  ctx: AdapterContext,
  base: string,
  workflow: Workflow,
  graph: WorkflowGraph,
  clientId: string,
  job: { promptId: string; submitted: boolean },
): Promise<string> {
  const promptId = job.promptId;
  // From here on ComfyUI may hold the prompt (until it answered otherwise), so a failure stops it.
  job.submitted = true;
  const res = await request(ctx, base, 'prompt', {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json' },
    body: JSON.stringify({ prompt: graph, client_id: clientId, prompt_id: promptId }),
  });
  const text = await res.text().catch((err: unknown) => {
    if (ctx.signal.aborted) throw new ClusterError('CANCELLED', 'the call was cancelled', { cause: err });
    throw new ClusterError('BACKEND_UNAVAILABLE', `ComfyUI at ${base} broke off its answer to POST /prompt`, {
      cause: err,
    });
  });
  if (!res.ok) job.submitted = false;
  if (res.status >= 500 || res.status === 429) {
    throw new ClusterError(
      'BACKEND_UNAVAILABLE',
      `ComfyUI at ${base} answered ${res.status} to POST /prompt${text ? `: ${text.replace(/\s+/g, ' ').slice(0, 200)}` : ''}`,
    );
  }
  if (!res.ok) {
    const detail = describeRefusal(text);
    throw new ClusterError(
      'BACKEND_PROTOCOL',
      `ComfyUI at ${base} refused the workflow ${workflow.source} with ${res.status}: ${detail}`,
      { cause: new BackendRefusal(res.status, detail) },
    );
  }
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch (err) {
    throw new ClusterError(
      'BACKEND_PROTOCOL',
      `ComfyUI at ${base} answered POST /prompt with something that is not JSON (${text.replace(/\s+/g, ' ').slice(0, 80)}): is the endpoint a ComfyUI server?`,
      { cause: err },
    );
  }
  const id = (body as { prompt_id?: unknown } | null)?.prompt_id;
  if (typeof id !== 'string' || id === '') {
    throw new ClusterError(
      'BACKEND_PROTOCOL',
      `ComfyUI at ${base} answered POST /prompt without a prompt_id: ${text.slice(0, 120)}`,
    );
  }
  return id;
}

/** Where a prompt is in ComfyUI's queue. */
async function queueState(
  ctx: AdapterContext,
  base: string,
  promptId: string,
): Promise<'pending' | 'running' | 'absent'> {
  const body = (await getJson(ctx, base, 'queue')) as {
    queue_running?: unknown;
    queue_pending?: unknown;
  } | null;
  const has = (list: unknown) =>
    Array.isArray(list) && list.some((item) => Array.isArray(item) && item[1] === promptId);
  if (has(body?.queue_running)) return 'running';
  if (has(body?.queue_pending)) return 'pending';
  return 'absent';
}

interface HistoryEntry {
  outputs?: Record<string, { images?: unknown }>;
  status?: { status_str?: unknown; completed?: unknown; messages?: unknown };
}

async function historyOf(
  ctx: AdapterContext,
  base: string,
  promptId: string,
): Promise<HistoryEntry | undefined> {
  const body = (await getJson(ctx, base, `history/${encodeURIComponent(promptId)}`)) as Record<
    string,
    unknown
  > | null;
  const entry = body?.[promptId];
  return typeof entry === 'object' && entry !== null ? (entry as HistoryEntry) : undefined;
}

function imageRefs(value: unknown): ImageRef[] {
  if (!Array.isArray(value)) return [];
  return value
    .filter(
      (i): i is Record<string, unknown> =>
        typeof i === 'object' && i !== null && typeof i.filename === 'string',
    )
    .map((i) => ({
      filename: i.filename as string,
      subfolder: typeof i.subfolder === 'string' ? i.subfolder : '',
      type: typeof i.type === 'string' ? i.type : 'output',
    }));
}

/** Saved images first; previews (`temp`) only when a workflow saves nothing. */
function preferSaved(refs: ImageRef[]): ImageRef[] {
  const saved = refs.filter((r) => r.type === 'output');
  return saved.length > 0 ? saved : refs;
}

const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

async function fetchImage(
  ctx: AdapterContext,
  base: string,
  ref: ImageRef,
): Promise<{ data: Buffer; mimeType: string }> {
  const query = new URLSearchParams({ filename: ref.filename, subfolder: ref.subfolder, type: ref.type });
  const res = await request(ctx, base, `view?${query}`);
  if (!res.ok) {
    res.close();
    throw new ClusterError(
      res.status >= 500 ? 'BACKEND_UNAVAILABLE' : 'BACKEND_PROTOCOL',
      `ComfyUI at ${base} answered ${res.status} to GET /view for ${ref.type} image ${ref.subfolder ? `${ref.subfolder}/` : ''}${ref.filename}`,
    );
  }
  let bytes: Buffer;
  try {
    bytes = await res.bytes();
  } catch (err) {
    if (ctx.signal.aborted) throw new ClusterError('CANCELLED', 'the call was cancelled', { cause: err });
    throw new ClusterError('BACKEND_UNAVAILABLE', `ComfyUI at ${base} broke off image ${ref.filename}`, {
      cause: err,
    });
  }
  const type = (res.header('content-type') ?? '').split(';')[0]?.trim() ?? '';
  const isPng = bytes.subarray(0, 8).equals(PNG_SIGNATURE);
  if (!isPng && !type.startsWith('image/')) {
    throw new ClusterError(
      'BACKEND_PROTOCOL',
      `ComfyUI at ${base} sent ${ref.filename} as ${type || 'untyped data'}, not an image`,
    );
  }
  // Raw bytes: they travel to the ingress as bytes and become base64 only in the answer.
  return { data: bytes, mimeType: isPng ? 'image/png' : type };
}

/**
 * Stops a prompt that has not finished: removes it from the queue when it may still wait
 * there, interrupts it (and only it) when it runs. Best effort with its own short timeout: the
 * call's signal may have aborted already, and failures here must not hide the original error.
 */
async function stopPrompt(
  ctx: AdapterContext,
  base: string,
  promptId: string,
  started: boolean,
): Promise<string> {
  const signal = new AbortController().signal;
  const timeoutMs = Math.min(ctx.backendTimeoutMs, 5000);
  const post = async (path: string, body: unknown) => {
    const res = await postJson(new URL(path, base).toString(), body, signal, timeoutMs);
    res.close();
  };
  try {
    let running = started;
    if (!started) {
      await post('queue', { delete: [promptId] });
      // It may have started meanwhile: look before interrupting, so another client's prompt is
      // never hit by a ComfyUI too old to honour `prompt_id` in /interrupt.
      const res = await fetch(new URL('queue', base), { signal: AbortSignal.timeout(timeoutMs) });
      const queue = (await res.json()) as { queue_running?: unknown[] };
      running = (queue.queue_running ?? []).some((item) => Array.isArray(item) && item[1] === promptId);
      if (!running) return 'the queued prompt was removed';
    }
    await post('interrupt', { prompt_id: promptId });
    return 'the running prompt was interrupted';
  } catch {
    return 'stopping the prompt on the backend failed';
  }
}

// ---------------------------------------------------------------------------------------------
// The adapter

interface Progression {
  offset: number;
  node: unknown;
  value: number;
  max: number;
  reported: number;
}

/** Sampler progress as monotonic MCP progress, across several samplers (a refiner pass). */
function reportProgress(ctx: AdapterContext, state: Progression, data: Record<string, unknown>): void {
  const value = Number(data.value);
  const max = Number(data.max);
  if (!Number.isFinite(value) || !Number.isFinite(max) || max <= 0) return;
  if ((state.node !== undefined && data.node !== state.node) || value < state.value)
    state.offset += state.max;
  state.node = data.node;
  state.value = value;
  state.max = max;
  const progress = state.offset + value;
  if (progress <= state.reported) return;
  state.reported = progress;
  ctx.progress({ progress, total: state.offset + max, message: `step ${value}/${max}` });
}

function executionErrorMessage(base: string, data: Record<string, unknown>): string {
  const node = data.node_id !== undefined && data.node_id !== null ? ` in node ${String(data.node_id)}` : '';
  const type = data.node_type ? ` (${String(data.node_type)})` : '';
  const kind = data.exception_type ? `${String(data.exception_type)}: ` : '';
  return `ComfyUI at ${base} failed to run the workflow${node}${type}: ${kind}${String(data.exception_message ?? 'unknown error')}`;
}

/**
 * Follows one prompt over the WebSocket until it finished; resolves with the images named in
 * `executed` messages. Only messages about this prompt count as signs of life: a prompt that
 * runs and says nothing for `backendTimeoutMs` has stalled; one still queued behind others
 * is waited for (its deadline bounds the wait).
 */
async function follow(
  ctx: AdapterContext,
  socket: ComfySocket,
  base: string,
  job: { promptId: string; started: boolean; finished: boolean },
): Promise<{ refs: ImageRef[]; history: HistoryEntry | undefined }> {
  const refs: ImageRef[] = [];
  const progression: Progression = { offset: 0, node: undefined, value: 0, max: 0, reported: 0 };
  let lastSign = performance.now();
  for (;;) {
    let message: SocketMessage | 'idle';
    try {
      message = await socket.next(lastSign + ctx.backendTimeoutMs - performance.now(), ctx.signal);
    } catch (err) {
      if (err instanceof ClusterError && err.code === 'BACKEND_UNAVAILABLE') {
        throw new ClusterError(
          'BACKEND_UNAVAILABLE',
          `${err.message} while prompt ${job.promptId} was ${job.started ? 'running' : 'queued'}; retryable`,
          { cause: err },
        );
      }
      throw err;
    }
    if (message === 'idle') {
      const state = await queueState(ctx, base, job.promptId);
      if (state === 'pending' || (state === 'running' && !job.started)) {
        // Waiting its turn, or just started: give it a full period to speak.
        job.started = state === 'running';
        lastSign = performance.now();
        continue;
      }
      if (state === 'running') {
        throw new ClusterError(
          'BACKEND_UNAVAILABLE',
          `ComfyUI at ${base} stalled: prompt ${job.promptId} has run without a message for ${ctx.backendTimeoutMs} ms (the pool's backendTimeout); interrupting it`,
        );
      }
      // Neither queued nor running: it may have finished while its messages went astray.
      const history = await historyOf(ctx, base, job.promptId);
      if (history?.status?.completed === true) {
        job.finished = true;
        return { refs, history };
      }
      if (history) {
        job.finished = true;
        throw new ClusterError(
          'BACKEND_PROTOCOL',
          `ComfyUI at ${base} ended prompt ${job.promptId} with an error`,
        );
      }
      throw new ClusterError(
        'BACKEND_UNAVAILABLE',
        `ComfyUI at ${base} lost prompt ${job.promptId}: it is neither queued, running nor in /history (restarted?)`,
      );
    }
    if (message.kind === 'binary') {
      if (job.started) lastSign = performance.now();
      continue;
    }
    const { data } = message;
    const promptId = data.prompt_id;
    if (promptId !== undefined && promptId !== job.promptId) continue;
    const ours = promptId === job.promptId;
    switch (message.type) {
      case 'execution_start':
      case 'execution_cached':
        if (ours) job.started = true;
        break;
      case 'executing':
        if (!ours) break;
        job.started = true;
        if (data.node === null) {
          job.finished = true;
          return { refs, history: undefined };
        }
        break;
      case 'progress':
        if (!ours && !job.started) break;
        reportProgress(ctx, progression, data);
        break;
      case 'executed': {
        if (!ours) break;
        const output = data.output as { images?: unknown } | undefined;
        refs.push(...imageRefs(output?.images));
        break;
      }
      case 'execution_error':
        if (!ours) break;
        job.finished = true;
        throw new ClusterError('BACKEND_PROTOCOL', executionErrorMessage(base, data));
      case 'execution_interrupted':
        if (!ours) break;
        job.finished = true;
        throw new ClusterError(
          'CANCELLED',
          ctx.signal.aborted
            ? 'the call was cancelled; the running prompt was interrupted'
            : `ComfyUI at ${base} interrupted prompt ${job.promptId} (someone called /interrupt on the backend)`,
        );
      default:
        // `status`, `execution_success` and anything newer carry nothing this adapter needs.
        break;
    }
    if (ours || message.type === 'progress') lastSign = performance.now();
  }
}

function baseUrl(endpointUrl: string): string {
  return endpointUrl.endsWith('/') ? endpointUrl : `${endpointUrl}/`;
}

/**
 * `generate_image` against a ComfyUI server: fills the tool's workflow template (by node
 * class_type), opens the `/ws` WebSocket with a fresh client id, submits the prompt, turns
 * sampler steps into progress, and returns the saved PNGs as MCP image content plus a line of
 * text with the seed and size. Cancelling removes a queued prompt or interrupts the running
 * one; a stall (no message for backendTimeoutMs), a dropped WebSocket or a 5xx is
 * BACKEND_UNAVAILABLE (retryable); an execution_error or an answer outside the protocol is
 * BACKEND_PROTOCOL.
 */
export const generateImageAdapter: ToolAdapter = {
  async prepare(tool) {
    await loadWorkflow(diffusionSettings.of(tool).workflow);
  },
  async run(ctx: AdapterContext): Promise<ToolResult> {
    if (ctx.signal.aborted) throw new ClusterError('CANCELLED', 'the call was cancelled');
    if (ctx.backend !== 'comfyui') {
      throw new ClusterError(
        'INVALID_CONFIG',
        `tool ${ctx.tool.name} (generate_image) needs a pool whose backend is comfyui, not ${ctx.backend}`,
      );
    }
    const workflow = await cachedWorkflow(diffusionSettings.of(ctx.tool).workflow);
    const args = ctx.arguments as {
      prompt: string;
      negative_prompt?: string;
      width?: number;
      height?: number;
      steps?: number;
      seed?: number;
    };
    const request: ImageRequest = {
      prompt: args.prompt,
      negativePrompt: args.negative_prompt ?? '',
      width: args.width ?? 512,
      height: args.height ?? 512,
      steps: args.steps ?? 20,
      seed: args.seed ?? randomInt(0, 2 ** 32),
      model: ctx.tool.model,
    };
    const graph = fillWorkflow(workflow, request);
    const base = baseUrl(ctx.endpointUrl);
    const clientId = randomUUID();
    const job = { promptId: randomUUID() as string, started: false, finished: false, submitted: false };
    const socket = await ComfySocket.open(base, clientId, ctx);
    try {
      job.promptId = await submitPrompt(ctx, base, workflow, graph, clientId, job);
      const outcome = await follow(ctx, socket, base, job);
      // The history is the record of what was saved; `executed` messages are the fallback.
      const history = outcome.history ?? (await historyOf(ctx, base, job.promptId));
      if (history?.status?.status_str === 'error') {
        throw new ClusterError(
          'BACKEND_PROTOCOL',
          `ComfyUI at ${base} recorded prompt ${job.promptId} as failed`,
        );
      }
      const fromHistory = Object.values(history?.outputs ?? {}).flatMap((o) => imageRefs(o?.images));
      const refs = preferSaved(fromHistory.length > 0 ? fromHistory : outcome.refs);
      if (refs.length === 0) {
        throw new ClusterError(
          'BACKEND_PROTOCOL',
          `ComfyUI at ${base} finished prompt ${job.promptId} without any image: does workflow ${workflow.source} end in a SaveImage node?`,
        );
      }
      const images = [];
      for (const ref of refs) images.push(await fetchImage(ctx, base, ref));
      const count = images.length === 1 ? 'an image' : `${images.length} images`;
      return {
        content: [
          ...images.map((image) => ({ type: 'image', data: image.data, mimeType: image.mimeType })),
          {
            type: 'text',
            text: `Generated ${count} of ${request.width}x${request.height} pixels with seed ${request.seed}, ${request.steps} steps (${request.model}).`,
          },
        ],
      };
    } catch (err) {
      const stopped =
        job.submitted && !job.finished ? await stopPrompt(ctx, base, job.promptId, job.started) : '';
      if (ctx.signal.aborted) {
        throw new ClusterError('CANCELLED', `the call was cancelled${stopped ? `; ${stopped}` : ''}`, {
          cause: err,
        });
      }
      throw err;
    } finally {
      socket.close();
    }
  },
};

/**
 * The diffusion family: `generate_image` on ComfyUI (`comfyui`, which has no /health and is
 * probed at `/system_stats`; one call per endpoint, since ComfyUI runs one prompt at a time and
 * more would only wait in its queue), and the built-in pool `diffusion`.
 */
export const diffusionFamily: ToolFamily<ToolAdapter> = {
  name: 'diffusion',
  backends: { comfyui: { healthPath: '/system_stats', endpointConcurrency: 1 } },
  settings: diffusionSettings,
  templates: {
    generate_image: {
      description:
        'Generate a PNG image from a text prompt with a diffusion model. Sampler steps arrive as progress notifications when a progress token is given.',
      backends: ['comfyui'],
      inputSchema: generateImageInput,
      adapter: () => generateImageAdapter,
    },
  },
  defaults: {
    pool: 'diffusion',
    backend: 'comfyui',
    tools: [{ name: 'generate_image', template: 'generate_image', model: 'sim-diffusion', deadline: '300s' }],
  },
};
