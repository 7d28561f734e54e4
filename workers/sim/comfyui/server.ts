/**
 * The simulated ComfyUI server: ComfyUI's HTTP routes and WebSocket messages, one GPU that runs
 * one prompt at a time from a queue ordered by prompt number (FIFO unless a client sends
 * `front` or `number`), deterministic PNG output, and failure injection for tests.
 */

import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { WebSocket, WebSocketServer } from 'ws';
import { type ApiGraph, type ExecutionPlan, objectInfo, validateGraph } from './nodes.js';
import {
  COMFY_SIM_FAILURES,
  type ComfySimFailure,
  type ComfySimOptions,
  isComfySimFailure,
  resolveComfySimOptions,
} from './options.js';
import { renderImage } from './render.js';

/** Counters and queue state of one simulated ComfyUI. */
export interface ComfySimStats {
  /** Prompts accepted by `POST /prompt` (valid graphs). */
  prompts: number;
  /** Prompts that ran to the end (`execution_success`). */
  completed: number;
  /** Running prompts stopped by `POST /interrupt`. */
  interrupted: number;
  /** Pending prompts removed by `POST /queue` (`delete` or `clear`). */
  deleted: number;
  /** Prompts that ended with `execution_error`. */
  failed: number;
  /** `POST /prompt` requests refused with 4xx (bad JSON, invalid graph, duplicate id). */
  rejected: number;
  /** Prompts running now (0 or 1: one GPU). */
  running: number;
  /** Prompts waiting in the queue now. */
  pending: number;
  /** WebSocket connections open now. */
  wsConnections: number;
  /** The failure mode in force. */
  failure: ComfySimFailure;
}

/** A running simulated ComfyUI. */
export interface ComfySim {
  /** Base URL without a trailing slash, e.g. `http://127.0.0.1:41234`. */
  readonly url: string;
  /** The port actually bound (useful with `port: 0`). */
  readonly port: number;
  /** A snapshot of the counters. */
  stats(): ComfySimStats;
  /** Switches the failure mode (also `POST /sim/fail {"mode": …}`); applies from the next event on. */
  setFailure(mode: ComfySimFailure): void;
  /** Stops the GPU, drops every connection and closes the server. Calling it again returns the same promise. */
  close(): Promise<void>;
}

interface ImageRef {
  filename: string;
  subfolder: string;
  type: 'output' | 'temp';
}

interface Job {
  id: string;
  number: number;
  graph: ApiGraph;
  clientId: string | undefined;
  extraData: Record<string, unknown>;
  plan: ExecutionPlan;
  /** Position in arrival order, the tie-breaker for equal numbers. */
  seq: number;
}

interface Running {
  job: Job;
  abort: AbortController;
  /** The node executing now, for clients that reconnect mid-prompt. */
  node: string | undefined;
}

interface HistoryEntry {
  prompt: unknown[];
  outputs: Record<string, { images: ImageRef[] }>;
  status: { status_str: 'success' | 'error'; completed: boolean; messages: [string, unknown][] };
  meta: Record<string, unknown>;
}

/** Thrown inside the executor when the running prompt is interrupted. */
class Interrupted extends Error {}

/** Thrown inside the executor for a node failure (`execution_error`). */
class ExecutionFailure extends Error {
  constructor(
    readonly nodeId: string,
    readonly exceptionType: string,
    message: string,
  ) {
    super(message);
  }
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly type: string,
    message: string,
  ) {
    super(message);
  }
}

type Body = { kind: 'ok'; text: string } | { kind: 'too-large' } | { kind: 'aborted' };

function readBody(req: IncomingMessage, limit: number): Promise<Body> {
  const declared = Number(req.headers['content-length']);
  if (Number.isFinite(declared) && declared > limit) return Promise.resolve({ kind: 'too-large' });
  return new Promise((resolve) => {
    const parts: Buffer[] = [];
    let size = 0;
    let done = false;
    const finish = (body: Body) => {
      if (done) return;
      done = true;
      resolve(body);
    };
    req.on('data', (chunk: Buffer) => {
      if (done) return;
      size += chunk.length;
      if (size > limit) {
        finish({ kind: 'too-large' });
        req.resume();
        return;
      }
      parts.push(chunk);
    });
    req.on('end', () => finish({ kind: 'ok', text: Buffer.concat(parts).toString('utf8') }));
    req.on('error', () => finish({ kind: 'aborted' }));
    req.on('close', () => finish({ kind: 'aborted' }));
  });
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  if (res.headersSent || res.destroyed) return;
  const payload = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(payload),
  });
  res.end(payload);
}

function sendText(
  res: ServerResponse,
  status: number,
  text: string,
  type = 'text/plain; charset=utf-8',
): void {
  if (res.headersSent || res.destroyed) return;
  res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

/** ComfyUI's answer to a refused prompt: `{error: {type, message, details, extra_info}, node_errors}`. */
function sendPromptError(
  res: ServerResponse,
  status: number,
  type: string,
  message: string,
  details = '',
): void {
  sendJson(res, status, { error: { type, message, details, extra_info: {} }, node_errors: [] });
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) {
      reject(new Interrupted());
      return;
    }
    const onAbort = () => {
      clearTimeout(timer);
      reject(new Interrupted());
    };
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

function untilAborted(signal: AbortSignal): Promise<never> {
  return new Promise((_, reject) => {
    if (signal.aborted) reject(new Interrupted());
    else signal.addEventListener('abort', () => reject(new Interrupted()), { once: true });
  });
}

const ROUTE_PREFIXES = ['/api/', '/'];

/** Starts a simulated ComfyUI; resolves once it listens. */
export async function startComfySim(input: Partial<ComfySimOptions> = {}): Promise<ComfySim> {
  const options = resolveComfySimOptions(input);
  let failure: ComfySimFailure = options.failure;
  let closed = false;
  let numberCounter = 0;
  let seqCounter = 0;
  const counters = { prompts: 0, completed: 0, interrupted: 0, deleted: 0, failed: 0, rejected: 0 };
  const pending: Job[] = [];
  let running: Running | undefined;
  const history = new Map<string, HistoryEntry>();
  /** Image bytes by `type/subfolder/filename`, with the prompt that made them (for eviction). */
  const images = new Map<string, Buffer>();
  const imagesOfPrompt = new Map<string, string[]>();
  const fileCounters = new Map<string, number>();
  const sockets = new Map<string, Set<WebSocket>>();
  let wsConnections = 0;

  const imageKey = (type: string, subfolder: string, filename: string) =>
    `${type}\u0000${subfolder}\u0000${filename}`;
  const queueRemaining = () => pending.length + (running ? 1 : 0);
  const queueItem = (job: Job) => [job.number, job.id, job.graph, job.extraData, job.plan.outputIds];

  const sendTo = (clientId: string | undefined, type: string, data: unknown) => {
    if (closed || clientId === undefined) return;
    const set = sockets.get(clientId);
    if (!set) return;
    const message = JSON.stringify({ type, data });
    for (const ws of set) if (ws.readyState === WebSocket.OPEN) ws.send(message);
  };
  const broadcastStatus = () => {
    if (closed) return;
    const message = JSON.stringify({
      type: 'status',
      data: { status: { exec_info: { queue_remaining: queueRemaining() } } },
    });
    for (const set of sockets.values())
      for (const ws of set) if (ws.readyState === WebSocket.OPEN) ws.send(message);
  };
  const dropSockets = (clientId: string | undefined) => {
    if (clientId === undefined) return;
    for (const ws of sockets.get(clientId) ?? []) ws.terminate();
  };

  const remember = (id: string, entry: HistoryEntry) => {
    history.set(id, entry);
    while (history.size > options.maxHistory) {
      const oldest = history.keys().next().value as string;
      forget(oldest);
    }
  };
  const forget = (id: string) => {
    history.delete(id);
    for (const key of imagesOfPrompt.get(id) ?? []) images.delete(key);
    imagesOfPrompt.delete(id);
  };

  /** Saves the images of one output node, ComfyUI-style names (`prefix_00001_.png`). */
  const saveImages = (job: Job, output: ExecutionPlan['outputs'][number]): ImageRef[] => {
    let type: ImageRef['type'] = 'output';
    let subfolder = '';
    let base = output.filenamePrefix;
    if (output.classType === 'PreviewImage') {
      type = 'temp';
      base = `ComfyUI_temp_${randomUUID().slice(0, 5)}`;
    } else {
      const normalized = base.replace(/\\/g, '/');
      if (normalized.startsWith('/') || normalized.split('/').includes('..')) {
        throw new ExecutionFailure(
          output.node,
          'Exception',
          `**** ERROR: Saving image outside the output folder is not allowed.\n full_output_folder: ${normalized}`,
        );
      }
      const slash = normalized.lastIndexOf('/');
      subfolder = slash === -1 ? '' : normalized.slice(0, slash);
      base = slash === -1 ? normalized : normalized.slice(slash + 1);
    }
    const refs: ImageRef[] = [];
    const counterKey = `${type}/${subfolder}/${base}`;
    for (let i = 0; i < output.batchSize; i++) {
      const counter = (fileCounters.get(counterKey) ?? 0) + 1;
      fileCounters.set(counterKey, counter);
      const filename = `${base}_${String(counter).padStart(5, '0')}_.png`;
      const key = imageKey(type, subfolder, filename);
      images.set(key, renderImage(output.width, output.height, [...output.fingerprint, i]));
      const list = imagesOfPrompt.get(job.id) ?? [];
      list.push(key);
      imagesOfPrompt.set(job.id, list);
      refs.push({ filename, subfolder, type });
    }
    return refs;
  };

  const execute = async (run: Running): Promise<void> => {
    const { job, abort } = run;
    const signal = abort.signal;
    const messages: [string, unknown][] = [];
    const send = (type: string, data: Record<string, unknown>, keep = false) => {
      if (keep) messages.push([type, data]);
      sendTo(job.clientId, type, data);
    };
    const outputs: HistoryEntry['outputs'] = {};
    const executed: string[] = [];
    const meta: Record<string, unknown> = {};
    const finish = (statusStr: 'success' | 'error') => {
      remember(job.id, {
        prompt: queueItem(job),
        outputs,
        status: { status_str: statusStr, completed: statusStr === 'success', messages },
        meta,
      });
    };
    const stallGate = async () => {
      if (failure === 'stall') await untilAborted(signal);
    };
    try {
      await stallGate();
      send('execution_start', { prompt_id: job.id, timestamp: Date.now() }, true);
      send('execution_cached', { nodes: [], prompt_id: job.id, timestamp: Date.now() }, true);
      for (const nodeId of job.plan.order) {
        if (signal.aborted) throw new Interrupted();
        run.node = nodeId;
        send('executing', { node: nodeId, display_node: nodeId, prompt_id: job.id });
        const steps = job.plan.samplerSteps[nodeId];
        if (steps !== undefined) {
          const stepMs = 1000 / options.stepsPerSecond;
          const started = performance.now();
          for (let step = 1; step <= steps; step++) {
            // Sleep to the step's due time, so the rate holds however long each send took.
            await sleep(Math.max(0, started + step * stepMs - performance.now()), signal);
            await stallGate();
            send('progress', { value: step, max: steps, prompt_id: job.id, node: nodeId });
            if (step === 1 && failure === 'drop-ws') dropSockets(job.clientId);
            if (step === 1 && failure === 'exec-error') {
              throw new ExecutionFailure(
                nodeId,
                'torch.OutOfMemoryError',
                'Allocation on device (simulated failure: the sampler ran out of GPU memory)',
              );
            }
          }
        }
        const output = job.plan.outputs.find((o) => o.node === nodeId);
        if (output) {
          const refs = saveImages(job, output);
          outputs[nodeId] = { images: refs };
          meta[nodeId] = { node_id: nodeId, display_node: nodeId, parent_node: null, real_node_id: nodeId };
          send('executed', {
            node: nodeId,
            display_node: nodeId,
            output: { images: refs },
            prompt_id: job.id,
          });
        }
        executed.push(nodeId);
      }
      send('execution_success', { prompt_id: job.id, timestamp: Date.now() }, true);
      finish('success');
      counters.completed += 1;
    } catch (err) {
      if (closed) return;
      const nodeId = err instanceof ExecutionFailure ? err.nodeId : (run.node ?? null);
      const nodeType = nodeId === null ? null : (job.graph[nodeId]?.class_type ?? null);
      if (err instanceof Interrupted) {
        send(
          'execution_interrupted',
          { prompt_id: job.id, node_id: nodeId, node_type: nodeType, executed, timestamp: Date.now() },
          true,
        );
        counters.interrupted += 1;
      } else {
        const fault =
          err instanceof ExecutionFailure
            ? err
            : new ExecutionFailure(
                nodeId ?? '',
                'Exception',
                err instanceof Error ? err.message : String(err),
              );
        send(
          'execution_error',
          {
            prompt_id: job.id,
            node_id: nodeId,
            node_type: nodeType,
            executed,
            exception_message: fault.message,
            exception_type: fault.exceptionType,
            traceback: [
              `  File "execution.py", line 1, in execute\n`,
              `${fault.exceptionType}: ${fault.message}\n`,
            ],
            current_inputs: {},
            current_outputs: {},
            timestamp: Date.now(),
          },
          true,
        );
        counters.failed += 1;
      }
      finish('error');
    } finally {
      if (!closed) {
        running = undefined;
        // As ComfyUI: the history is written before `executing` with node null announces the end.
        sendTo(job.clientId, 'executing', { node: null, prompt_id: job.id });
        broadcastStatus();
        schedule();
      }
    }
  };

  const schedule = () => {
    if (closed || running || pending.length === 0) return;
    const job = pending.shift() as Job;
    running = { job, abort: new AbortController(), node: undefined };
    broadcastStatus();
    void execute(running);
  };

  const insertPending = (job: Job) => {
    let i = pending.length;
    while (i > 0) {
      const prev = pending[i - 1] as Job;
      if (prev.number < job.number || (prev.number === job.number && prev.seq < job.seq)) break;
      i--;
    }
    pending.splice(i, 0, job);
  };

  const postPrompt = (text: string, res: ServerResponse) => {
    if (failure === '5xx') {
      sendText(res, 500, '500 Internal Server Error\n\nServer got itself in trouble');
      return;
    }
    if (failure === 'malformed') {
      sendText(res, 200, '<html><body><h1>ComfyUI</h1>queued?</body></html>', 'text/html; charset=utf-8');
      return;
    }
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch (err) {
      counters.rejected += 1;
      sendPromptError(res, 400, 'invalid_json', 'Request body is not valid JSON', (err as Error).message);
      return;
    }
    if (typeof body !== 'object' || body === null || Array.isArray(body)) {
      counters.rejected += 1;
      sendPromptError(res, 400, 'invalid_prompt', 'Request body must be a JSON object');
      return;
    }
    const request = body as Record<string, unknown>;
    if (!('prompt' in request)) {
      counters.rejected += 1;
      sendPromptError(res, 400, 'no_prompt', 'No prompt provided', 'No prompt provided');
      return;
    }
    const result = validateGraph(request.prompt, options);
    if (!result.ok) {
      counters.rejected += 1;
      sendJson(res, 400, { error: result.error, node_errors: result.nodeErrors });
      return;
    }
    let id: string = randomUUID();
    if (request.prompt_id !== undefined) {
      if (
        typeof request.prompt_id !== 'string' ||
        request.prompt_id === '' ||
        request.prompt_id.length > 256
      ) {
        counters.rejected += 1;
        sendPromptError(
          res,
          400,
          'invalid_prompt',
          'prompt_id must be a non-empty string of at most 256 characters',
        );
        return;
      }
      id = request.prompt_id;
      if (history.has(id) || running?.job.id === id || pending.some((j) => j.id === id)) {
        counters.rejected += 1;
        sendPromptError(res, 400, 'invalid_prompt', `prompt_id ${id} is already queued or in the history`);
        return;
      }
    }
    if (pending.length >= options.maxQueue) {
      sendPromptError(
        res,
        503,
        'queue_full',
        `the queue holds ${options.maxQueue} prompts already; try later`,
      );
      return;
    }
    let number: number;
    if (typeof request.number === 'number' && Number.isFinite(request.number)) number = request.number;
    else {
      number = numberCounter;
      if (request.front === true) number = -number;
    }
    numberCounter += 1;
    const extraData =
      typeof request.extra_data === 'object' &&
      request.extra_data !== null &&
      !Array.isArray(request.extra_data)
        ? { ...(request.extra_data as Record<string, unknown>) }
        : {};
    const clientId = typeof request.client_id === 'string' ? request.client_id : undefined;
    if (clientId !== undefined) extraData.client_id = clientId;
    const job: Job = {
      id,
      number,
      graph: request.prompt as ApiGraph,
      clientId,
      extraData,
      plan: result.plan,
      seq: seqCounter++,
    };
    insertPending(job);
    counters.prompts += 1;
    sendJson(res, 200, { prompt_id: id, number, node_errors: result.nodeErrors });
    broadcastStatus();
    schedule();
  };

  const postQueue = (body: Record<string, unknown>) => {
    if (body.clear === true) {
      counters.deleted += pending.length;
      pending.length = 0;
    }
    if (Array.isArray(body.delete)) {
      for (const id of body.delete) {
        const i = pending.findIndex((j) => j.id === id);
        if (i === -1) continue;
        pending.splice(i, 1);
        counters.deleted += 1;
      }
    }
    broadcastStatus();
  };

  const postInterrupt = (text: string) => {
    let body: unknown = {};
    try {
      body = text.trim() === '' ? {} : JSON.parse(text);
    } catch {
      body = {}; // As ComfyUI: a body that is not JSON interrupts whatever runs.
    }
    const promptId =
      typeof body === 'object' && body !== null ? (body as { prompt_id?: unknown }).prompt_id : undefined;
    if (!running) return;
    if (typeof promptId === 'string' && promptId !== '' && running.job.id !== promptId) return;
    running.abort.abort();
  };

  const stats = (): ComfySimStats => ({
    ...counters,
    running: running ? 1 : 0,
    pending: pending.length,
    wsConnections,
    failure,
  });

  const jsonBody = (text: string): Record<string, unknown> => {
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch (err) {
      throw new HttpError(400, 'invalid_json', `Request body is not valid JSON: ${(err as Error).message}`);
    }
    if (typeof body !== 'object' || body === null || Array.isArray(body)) {
      throw new HttpError(400, 'invalid_request', 'Request body must be a JSON object');
    }
    return body as Record<string, unknown>;
  };

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const url = new URL(req.url ?? '/', 'http://sim.invalid');
    let path = url.pathname;
    for (const prefix of ROUTE_PREFIXES) {
      if (prefix !== '/' && path.startsWith(prefix)) {
        path = path.slice(prefix.length - 1);
        break;
      }
    }
    const method = req.method ?? 'GET';
    const allow = (m: 'GET' | 'POST') => {
      if (method !== m)
        throw new HttpError(405, 'method_not_allowed', `${method} ${path} is not allowed; use ${m}`);
    };
    const body = async (): Promise<string> => {
      const read = await readBody(req, options.maxBodyBytes);
      if (read.kind === 'too-large') {
        res.setHeader('connection', 'close');
        throw new HttpError(413, 'too_large', `request body is larger than ${options.maxBodyBytes} bytes`);
      }
      if (read.kind === 'aborted') throw new HttpError(400, 'aborted', 'request body was cut off');
      return read.text;
    };

    if (path === '/prompt') {
      if (method === 'GET') {
        sendJson(res, 200, { exec_info: { queue_remaining: queueRemaining() } });
        return;
      }
      allow('POST');
      postPrompt(await body(), res);
      return;
    }
    if (path === '/queue') {
      if (method === 'GET') {
        sendJson(res, 200, {
          queue_running: running ? [queueItem(running.job)] : [],
          queue_pending: pending.map(queueItem),
        });
        return;
      }
      allow('POST');
      postQueue(jsonBody(await body()));
      res.writeHead(200).end();
      return;
    }
    if (path === '/interrupt') {
      allow('POST');
      postInterrupt(await body());
      res.writeHead(200).end();
      return;
    }
    if (path === '/history') {
      if (method === 'GET') {
        const max = Number(url.searchParams.get('max_items'));
        const entries = [...history.entries()];
        const kept = Number.isInteger(max) && max > 0 ? entries.slice(-max) : entries;
        sendJson(res, 200, Object.fromEntries(kept));
        return;
      }
      allow('POST');
      const request = jsonBody(await body());
      if (request.clear === true) for (const id of [...history.keys()]) forget(id);
      if (Array.isArray(request.delete))
        for (const id of request.delete) if (typeof id === 'string') forget(id);
      res.writeHead(200).end();
      return;
    }
    if (path.startsWith('/history/')) {
      allow('GET');
      const id = decodeURIComponent(path.slice('/history/'.length));
      const entry = history.get(id);
      sendJson(res, 200, entry ? { [id]: entry } : {});
      return;
    }
    if (path === '/view') {
      allow('GET');
      const filename = url.searchParams.get('filename');
      const subfolder = url.searchParams.get('subfolder') ?? '';
      const type = url.searchParams.get('type') ?? 'output';
      if (filename === null) throw new HttpError(404, 'not_found', 'no filename given');
      if (filename.startsWith('/') || filename.includes('..') || subfolder.split('/').includes('..')) {
        throw new HttpError(400, 'bad_request', 'invalid filename');
      }
      if (type !== 'output' && type !== 'temp' && type !== 'input') {
        throw new HttpError(400, 'bad_request', `unknown type ${JSON.stringify(type)}`);
      }
      const bytes = images.get(imageKey(type, subfolder, filename));
      if (!bytes)
        throw new HttpError(
          404,
          'not_found',
          `no ${type} file ${subfolder ? `${subfolder}/` : ''}${filename}`,
        );
      res.writeHead(200, {
        'content-type': 'image/png',
        'content-length': bytes.length,
        'content-disposition': `filename="${filename.replace(/"/g, '')}"`,
      });
      res.end(bytes);
      return;
    }
    if (path === '/system_stats') {
      allow('GET');
      sendJson(res, 200, {
        system: {
          os: 'posix',
          ram_total: 128 * 2 ** 30,
          ram_free: 96 * 2 ** 30,
          comfyui_version: '0.3.0-sim',
          python_version: '3.12.0 (simulated)',
          pytorch_version: '2.5.0+sim',
          embedded_python: false,
          argv: ['main.py'],
        },
        devices: [
          {
            name: 'cuda:0 Simulated GPU : cudaMallocAsync',
            type: 'cuda',
            index: 0,
            vram_total: 80 * 2 ** 30,
            vram_free: running ? 60 * 2 ** 30 : 78 * 2 ** 30,
            torch_vram_total: 8 * 2 ** 30,
            torch_vram_free: 6 * 2 ** 30,
          },
        ],
      });
      return;
    }
    if (path === '/object_info') {
      allow('GET');
      sendJson(res, 200, objectInfo());
      return;
    }
    if (path.startsWith('/object_info/')) {
      allow('GET');
      const name = decodeURIComponent(path.slice('/object_info/'.length));
      const info = objectInfo();
      sendJson(res, 200, Object.hasOwn(info, name) ? { [name]: info[name] } : {});
      return;
    }
    if (path === '/free') {
      allow('POST');
      await body();
      res.writeHead(200).end();
      return;
    }
    if (path === '/sim/stats') {
      allow('GET');
      sendJson(res, 200, stats());
      return;
    }
    if (path === '/sim/fail') {
      allow('POST');
      const mode = jsonBody(await body()).mode;
      if (!isComfySimFailure(mode)) {
        throw new HttpError(
          400,
          'bad_request',
          `mode must be one of ${COMFY_SIM_FAILURES.join(', ')}, got ${JSON.stringify(mode)}`,
        );
      }
      failure = mode;
      sendJson(res, 200, { mode });
      return;
    }
    if (path === '/' && method === 'GET') {
      sendText(res, 200, '<!doctype html><title>ComfyUI (simulated)</title>', 'text/html; charset=utf-8');
      return;
    }
    if (path === '/ws') throw new HttpError(400, 'bad_request', 'GET /ws needs a WebSocket upgrade');
    throw new HttpError(404, 'not_found', `no route ${method} ${path}`);
  };

  const server: Server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      if (err instanceof HttpError) {
        sendJson(res, err.status, {
          error: { type: err.type, message: err.message, details: '', extra_info: {} },
        });
      } else {
        sendJson(res, 500, {
          error: {
            type: 'internal',
            message: err instanceof Error ? err.message : String(err),
            details: '',
            extra_info: {},
          },
        });
      }
    });
  });
  server.on('clientError', (_err, socket: Duplex) => {
    if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n');
    else socket.destroy();
  });

  const wss = new WebSocketServer({ noServer: true, maxPayload: 64 * 1024, perMessageDeflate: false });
  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    socket.on('error', () => socket.destroy());
    let url: URL;
    try {
      url = new URL(req.url ?? '/', 'http://sim.invalid');
    } catch {
      socket.end('HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n');
      return;
    }
    if (closed || (url.pathname !== '/ws' && url.pathname !== '/api/ws')) {
      socket.end('HTTP/1.1 404 Not Found\r\nconnection: close\r\ncontent-length: 0\r\n\r\n');
      return;
    }
    const clientId = url.searchParams.get('clientId') || randomUUID().replace(/-/g, '');
    wss.handleUpgrade(req, socket, head, (ws) => {
      if (closed) {
        ws.terminate();
        return;
      }
      let set = sockets.get(clientId);
      if (!set) {
        set = new Set();
        sockets.set(clientId, set);
      }
      set.add(ws);
      wsConnections += 1;
      ws.on('error', () => ws.terminate());
      ws.on('close', () => {
        wsConnections -= 1;
        const current = sockets.get(clientId);
        current?.delete(ws);
        if (current?.size === 0) sockets.delete(clientId);
      });
      ws.send(
        JSON.stringify({
          type: 'status',
          data: { status: { exec_info: { queue_remaining: queueRemaining() } }, sid: clientId },
        }),
      );
      // As ComfyUI: a client that reconnects mid-prompt learns which node runs.
      if (running && running.job.clientId === clientId && running.node !== undefined) {
        ws.send(
          JSON.stringify({
            type: 'executing',
            data: { node: running.node, display_node: running.node, prompt_id: running.job.id },
          }),
        );
      }
    });
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  const host = options.host.includes(':') ? `[${options.host}]` : options.host;
  const url = `http://${host === '0.0.0.0' ? '127.0.0.1' : host === '[::]' ? '[::1]' : host}:${port}`;

  let closing: Promise<void> | undefined;
  return {
    url,
    port,
    stats,
    setFailure(mode: ComfySimFailure) {
      if (!isComfySimFailure(mode)) {
        throw new Error(
          `comfyui sim: failure mode must be one of ${COMFY_SIM_FAILURES.join(', ')}, got ${String(mode)}`,
        );
      }
      failure = mode;
    },
    close() {
      closing ??= new Promise<void>((resolve) => {
        closed = true;
        pending.length = 0;
        running?.abort.abort();
        running = undefined;
        for (const set of sockets.values()) for (const ws of set) ws.terminate();
        wss.close();
        server.close(() => resolve());
        server.closeAllConnections();
      });
      return closing;
    },
  };
}
