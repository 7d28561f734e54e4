import { randomInt, randomUUID } from 'node:crypto';
import { ClusterError, type ToolFamily } from '../../services/core/index.js';
import type { AdapterContext, ToolAdapter, ToolResult } from '../runtime/index.js';
import { generateImageInput } from './schemas.js';
import { diffusionSettings } from './settings.js';

export { generateImageInput } from './schemas.js';
export type { DiffusionToolSettings } from './settings.js';
export { diffusionSettings } from './settings.js';

import {
  fetchImage,
  type HistoryEntry,
  historyOf,
  type ImageRef,
  imageRefs,
  preferSaved,
  queueState,
  stopPrompt,
  submitPrompt,
} from './comfy-api.js';
import { ComfySocket, type SocketMessage } from './comfy-socket.js';
import { cachedWorkflow, fillWorkflow, type ImageRequest, loadWorkflow } from './workflow.js';

export type { ImageRequest, Workflow, WorkflowGraph, WorkflowNode } from './workflow.js';
export { fillWorkflow, loadWorkflow, parseWorkflow, REQUIRED_NODE_TYPES } from './workflow.js';

// `generate_image` against ComfyUI: an API-format workflow template filled per call
// (workflow.ts), submitted with `POST /prompt`, followed over the `/ws` WebSocket (comfy-socket.ts;
// sampler steps become progress), and its images read back with `/history` and `/view`
// (comfy-api.ts). Cancelling removes a queued prompt (`POST /queue {delete}`) or interrupts the
// running one (`POST /interrupt {prompt_id}`). This file holds the adapter and the family.

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
