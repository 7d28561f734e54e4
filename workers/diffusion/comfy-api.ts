import { ClusterError } from '../../services/core/index.js';
import {
  type AdapterContext,
  BackendRefusal,
  type BackendRequestInit,
  type BackendResponse,
  backendRequest,
  postJson,
  readJson,
} from '../runtime/index.js';
import type { Workflow, WorkflowGraph } from './workflow.js';

// ComfyUI's HTTP API as generate_image uses it: `/prompt`, `/queue`, `/history`, `/view` and
// `/interrupt`.

export interface ImageRef {
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
export async function submitPrompt(
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
export async function queueState(
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

export interface HistoryEntry {
  outputs?: Record<string, { images?: unknown }>;
  status?: { status_str?: unknown; completed?: unknown; messages?: unknown };
}

export async function historyOf(
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

export function imageRefs(value: unknown): ImageRef[] {
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
export function preferSaved(refs: ImageRef[]): ImageRef[] {
  const saved = refs.filter((r) => r.type === 'output');
  return saved.length > 0 ? saved : refs;
}

const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

export async function fetchImage(
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
export async function stopPrompt(
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
