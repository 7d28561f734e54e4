import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PNG } from 'pngjs';
import { describe, expect, it } from 'vitest';
import type { ToolConfig } from '../services/core/index.js';
import {
  type DiffusionToolSettings,
  generateImageAdapter,
  loadWorkflow,
} from '../workers/diffusion/index.js';
import type { ToolProgress, ToolResult } from '../workers/runtime/index.js';
import type { ComfySimOptions } from '../workers/sim/index.js';
import {
  adapterContext,
  type ContextOptions,
  cleanupAfterEach,
  downUrl,
  rejection,
  startComfy,
  textOf as textOfResult,
} from './support/adapter-harness.js';
import { resolveConfig } from './support/families.js';
import { waitFor } from './support/wait.js';

// The generate_image adapter against the simulated ComfyUI over real HTTP and WebSocket: images,
// progress, cancellation reaching the backend (interrupt / queue delete), every failure mode,
// and workflow loading.

const imageTool = resolveConfig('', {}).tools.find((t) => t.template === 'generate_image') as ToolConfig;

const cleanups = cleanupAfterEach();
const comfy = (options: Partial<ComfySimOptions> = {}) => startComfy(cleanups, options);

interface RunOptions extends Omit<ContextOptions, 'backend' | 'call'> {
  tool?: Partial<ToolConfig & DiffusionToolSettings>;
}

/** Runs generate_image on `endpointUrl`: a 64×64 image in 3 steps unless `args` say otherwise. */
function run(
  endpointUrl: string,
  args: Record<string, unknown>,
  options: RunOptions = {},
): Promise<ToolResult> {
  const { tool, ...context } = options;
  return generateImageAdapter.run(
    adapterContext(
      { ...imageTool, ...tool },
      { width: 64, height: 64, steps: 3, ...args },
      endpointUrl,
      context,
    ),
  );
}

function decode(result: ToolResult): PNG[] {
  return result.content
    .filter((c) => (c as { type: string }).type === 'image')
    .map((c) => {
      // The adapter hands the image over as raw bytes; the ingress writes them base64.
      const image = c as { data: Buffer; mimeType: string };
      expect(image.mimeType).toBe('image/png');
      expect(Buffer.isBuffer(image.data)).toBe(true);
      return PNG.sync.read(image.data);
    });
}

/** The caption that comes with the images. */
const textOf = (result: ToolResult) => textOfResult(result, { anywhere: true });

describe('generateImageAdapter against the simulated ComfyUI', () => {
  it('returns a PNG of the requested size, the same for the same seed and prompt', async () => {
    const sim = await comfy();
    const args = { prompt: 'a lighthouse at dusk', width: 96, height: 64, seed: 42 };
    const first = await run(sim.url, args);
    const again = await run(sim.url, args);
    const other = await run(sim.url, { ...args, seed: 43 });

    const [image] = decode(first);
    expect(image?.width).toBe(96);
    expect(image?.height).toBe(64);
    expect(textOf(first)).toContain('seed 42');
    expect(textOf(first)).toContain('96x64');
    const bytes = (r: ToolResult) => (r.content[0] as { data: Buffer }).data.toString('base64');
    expect(bytes(again)).toBe(bytes(first));
    expect(bytes(other)).not.toBe(bytes(first));
    expect(sim.stats()).toMatchObject({ prompts: 3, completed: 3, running: 0, pending: 0 });
    // The adapter closes its WebSocket every time.
    await waitFor('the WebSockets to close', () => sim.stats().wsConnections === 0);
  });

  it('picks a random seed when none is given and says which', async () => {
    const sim = await comfy();
    const result = await run(sim.url, { prompt: 'a cat' });
    expect(textOf(result)).toMatch(/seed \d+/);
    expect(decode(result)).toHaveLength(1);
  });

  it('reports one progress notification per sampler step, in order', async () => {
    const sim = await comfy();
    const updates: ToolProgress[] = [];
    await run(sim.url, { prompt: 'progress', steps: 6, seed: 1 }, { onProgress: (p) => updates.push(p) });
    expect(updates.map((u) => u.progress)).toEqual([1, 2, 3, 4, 5, 6]);
    expect(updates.every((u) => u.total === 6)).toBe(true);
    expect(updates[2]?.message).toBe('step 3/6');
  });

  it('runs concurrent calls one at a time, as the GPU does, and answers both', async () => {
    const sim = await comfy({ stepsPerSecond: 200 });
    const [a, b] = await Promise.all([
      run(sim.url, { prompt: 'first', seed: 1, steps: 5 }),
      run(sim.url, { prompt: 'second', seed: 2, steps: 5 }),
    ]);
    expect(decode(a)).toHaveLength(1);
    expect(decode(b)).toHaveLength(1);
    expect(sim.stats()).toMatchObject({ prompts: 2, completed: 2 });
  });

  it('interrupts the running prompt on the backend when the call is cancelled', async () => {
    const sim = await comfy({ stepsPerSecond: 20 });
    const abort = new AbortController();
    const updates: ToolProgress[] = [];
    const pending = run(
      sim.url,
      { prompt: 'long', steps: 10_000 },
      { signal: abort.signal, onProgress: (p) => updates.push(p) },
    );
    await waitFor('the first sampler step', () => updates.length > 0);
    abort.abort();
    const err = await rejection(pending);
    expect(err.code).toBe('CANCELLED');
    expect(err.message).toContain('interrupted');
    await waitFor('the interrupt', () => sim.stats().interrupted === 1 && sim.stats().running === 0);
    expect(sim.stats().completed).toBe(0);
  });

  it('removes a queued prompt from the queue when the call is cancelled before it runs', async () => {
    const sim = await comfy({ stepsPerSecond: 20 });
    const first = new AbortController();
    const second = new AbortController();
    const running = run(sim.url, { prompt: 'ahead', steps: 10_000 }, { signal: first.signal });
    await waitFor('the first prompt to run', () => sim.stats().running === 1);
    const queued = run(sim.url, { prompt: 'behind', steps: 10 }, { signal: second.signal });
    await waitFor('the second prompt to queue', () => sim.stats().pending === 1);

    second.abort();
    const err = await rejection(queued);
    expect(err.code).toBe('CANCELLED');
    expect(err.message).toContain('removed');
    await waitFor('the delete', () => sim.stats().deleted === 1 && sim.stats().pending === 0);
    expect(sim.stats().interrupted).toBe(0);

    first.abort();
    expect((await rejection(running)).code).toBe('CANCELLED');
    await waitFor('the interrupt', () => sim.stats().interrupted === 1);
  });

  it('rejects at once when the call is already cancelled', async () => {
    const sim = await comfy();
    const abort = new AbortController();
    abort.abort();
    expect((await rejection(run(sim.url, { prompt: 'x' }, { signal: abort.signal }))).code).toBe('CANCELLED');
    expect(sim.stats().prompts).toBe(0);
  });
});

describe('generateImageAdapter failure modes', () => {
  it('5xx on POST /prompt is BACKEND_UNAVAILABLE (retryable)', async () => {
    const sim = await comfy({ failure: '5xx' });
    const err = await rejection(run(sim.url, { prompt: 'x' }));
    expect(err.code).toBe('BACKEND_UNAVAILABLE');
    expect(err.message).toContain(sim.url);
    expect(err.message).toContain('500');
  });

  it('a non-JSON answer to POST /prompt is BACKEND_PROTOCOL', async () => {
    const sim = await comfy({ failure: 'malformed' });
    const err = await rejection(run(sim.url, { prompt: 'x' }));
    expect(err.code).toBe('BACKEND_PROTOCOL');
    expect(err.message).toMatch(/not JSON.*ComfyUI server/);
  });

  it('a prompt that stalls is BACKEND_UNAVAILABLE after backendTimeoutMs and is interrupted', async () => {
    const sim = await comfy({ failure: 'stall' });
    const err = await rejection(run(sim.url, { prompt: 'x' }, { backendTimeoutMs: 300 }));
    expect(err.code).toBe('BACKEND_UNAVAILABLE');
    expect(err.message).toContain('stalled');
    expect(err.message).toContain('300 ms');
    await waitFor('the stalled prompt to be interrupted', () => sim.stats().interrupted === 1);
    expect(sim.stats().running).toBe(0);
  });

  it('waits, without calling it a stall, while its prompt is queued behind another', async () => {
    const sim = await comfy({ stepsPerSecond: 50 });
    const ahead = run(sim.url, { prompt: 'ahead', steps: 60 }, { backendTimeoutMs: 10_000 });
    await waitFor('the first prompt to run', () => sim.stats().running === 1);
    // Silent for many of its timeouts while queued; each poll of /queue shows it pending.
    const behind = await run(sim.url, { prompt: 'behind', steps: 2 }, { backendTimeoutMs: 300 });
    expect(decode(behind)).toHaveLength(1);
    expect(decode(await ahead)).toHaveLength(1);
  });

  it('a WebSocket dropped mid-prompt is BACKEND_UNAVAILABLE', async () => {
    const sim = await comfy({ failure: 'drop-ws', stepsPerSecond: 50 });
    const err = await rejection(run(sim.url, { prompt: 'x', steps: 200 }));
    expect(err.code).toBe('BACKEND_UNAVAILABLE');
    expect(err.message).toContain('closed the WebSocket');
    expect(err.message).toContain('retryable');
    // The orphaned prompt is interrupted rather than left to burn the GPU.
    await waitFor('the orphaned prompt to stop', () => sim.stats().running === 0);
    expect(sim.stats().interrupted).toBe(1);
  });

  it('execution_error is BACKEND_PROTOCOL with the exception message', async () => {
    const sim = await comfy({ failure: 'exec-error' });
    const err = await rejection(run(sim.url, { prompt: 'x', steps: 5 }));
    expect(err.code).toBe('BACKEND_PROTOCOL');
    expect(err.message).toContain('ran out of GPU memory');
    expect(err.message).toContain('KSampler');
    expect(sim.stats()).toMatchObject({ failed: 1, running: 0 });
  });

  it('a backend that is down (closed port) is BACKEND_UNAVAILABLE naming it', async () => {
    const url = await downUrl();
    const err = await rejection(run(url, { prompt: 'x' }));
    expect(err.code).toBe('BACKEND_UNAVAILABLE');
    expect(err.message).toContain(url);
    expect(err.message).toContain('unreachable');
  });

  it('a workflow ComfyUI refuses is BACKEND_PROTOCOL naming the node and the problem', async () => {
    const sim = await comfy({ maxImageSize: 256 });
    const err = await rejection(run(sim.url, { prompt: 'x', width: 512, height: 64 }));
    expect(err.code).toBe('BACKEND_PROTOCOL');
    expect(err.message).toContain('EmptyLatentImage');
    expect(err.message).toContain('bigger than max of 256');
    expect(err.message).toContain('default.json');
  });

  it('recovers when the failure is cleared', async () => {
    const sim = await comfy({ failure: '5xx' });
    expect((await rejection(run(sim.url, { prompt: 'x' }))).code).toBe('BACKEND_UNAVAILABLE');
    sim.setFailure('none');
    expect(decode(await run(sim.url, { prompt: 'x' }))).toHaveLength(1);
  });

  it('a pool whose backend is not comfyui is INVALID_CONFIG', async () => {
    const ctx = adapterContext(imageTool, { prompt: 'x' }, 'http://127.0.0.1:1', {
      backend: 'openai-chat',
      backendTimeoutMs: 1000,
    });
    const err = await rejection(generateImageAdapter.run(ctx));
    expect(err.code).toBe('INVALID_CONFIG');
    expect(err.message).toContain('comfyui');
  });
});

describe('workflows', () => {
  const defaultPath = new URL('../workers/diffusion/workflows/default.json', import.meta.url);
  let dir = '';
  const tempFile = async (name: string, content: string) => {
    if (!dir) {
      dir = await mkdtemp(join(tmpdir(), 'mcp-cluster-workflow-'));
      cleanups.push(async () => {
        await rm(dir, { recursive: true, force: true });
        dir = '';
      });
    }
    const path = join(dir, name);
    await writeFile(path, content);
    return path;
  };
  const shipped = async () =>
    JSON.parse(await readFile(defaultPath, 'utf8')) as Record<string, { class_type: string }>;

  it('loads the shipped default', async () => {
    const workflow = await loadWorkflow();
    expect(workflow.samplers).toHaveLength(1);
    expect(workflow.positive).toHaveLength(1);
    expect(workflow.negative).toHaveLength(1);
    expect(workflow.source).toContain('default.json');
  });

  it('rejects a workflow without a KSampler, naming the file and the node type', async () => {
    const graph = await shipped();
    for (const [id, node] of Object.entries(graph)) if (node.class_type === 'KSampler') delete graph[id];
    const path = await tempFile('no-sampler.json', JSON.stringify(graph));
    const err = await rejection(loadWorkflow(path));
    expect(err.code).toBe('INVALID_CONFIG');
    expect(err.message).toContain(path);
    expect(err.message).toContain('no KSampler node');
  });

  it('rejects a missing file, bad JSON and a UI-format export with a hint', async () => {
    const missing = await rejection(loadWorkflow('/nonexistent/workflow.json'));
    expect(missing.code).toBe('INVALID_CONFIG');
    expect(missing.message).toContain('/nonexistent/workflow.json');
    const bad = await rejection(loadWorkflow(await tempFile('bad.json', '{"3": ')));
    expect(bad.message).toContain('not valid JSON');
    const ui = await rejection(loadWorkflow(await tempFile('ui.json', '{"nodes": [], "links": []}')));
    expect(ui.message).toContain('API');
  });

  it("fills an operator's workflow by node type, whatever its node ids", async () => {
    const graph = await shipped();
    const renamed: Record<string, unknown> = {};
    const ids = Object.keys(graph);
    const newId = (id: string) => `n${ids.indexOf(id) + 100}`;
    for (const [id, node] of Object.entries(graph)) {
      const copy = JSON.parse(JSON.stringify(node)) as { inputs: Record<string, unknown> };
      for (const [k, v] of Object.entries(copy.inputs)) {
        if (Array.isArray(v)) copy.inputs[k] = [newId(v[0] as string), v[1]];
      }
      renamed[newId(id)] = copy;
    }
    const path = await tempFile('renamed.json', JSON.stringify(renamed));
    const sim = await comfy();
    const a = await run(
      sim.url,
      { prompt: 'same', seed: 9, width: 72, height: 48 },
      { tool: { workflow: path } },
    );
    const b = await run(sim.url, { prompt: 'same', seed: 9, width: 72, height: 48 });
    const [image] = decode(a);
    expect([image?.width, image?.height]).toEqual([72, 48]);
    // Same graph up to ids → same image.
    expect((a.content[0] as { data: Buffer }).data.equals((b.content[0] as { data: Buffer }).data)).toBe(
      true,
    );
  });

  it('a workflow whose file is missing fails the call with INVALID_CONFIG', async () => {
    const sim = await comfy();
    const err = await rejection(
      run(sim.url, { prompt: 'x' }, { tool: { workflow: '/nonexistent/wf.json' } }),
    );
    expect(err.code).toBe('INVALID_CONFIG');
    expect(sim.stats().prompts).toBe(0);
  });
});

describe('simulated ComfyUI robustness', () => {
  it('answers bad JSON with 400 and keeps serving', async () => {
    const sim = await comfy();
    const res = await fetch(`${sim.url}/prompt`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{"prompt": {',
    });
    expect(res.status).toBe(400);
    const body = (await res.json()) as { error: { type: string; message: string } };
    expect(body.error.message).toContain('JSON');
    expect(decode(await run(sim.url, { prompt: 'still alive' }))).toHaveLength(1);
  });
});
