import { readFile } from 'node:fs/promises';
import { PNG } from 'pngjs';
import { describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import {
  type ComfySim,
  type ComfySimOptions,
  parseComfySimArgs,
  startComfySim,
} from '../workers/sim/index.js';
import { cleanupAfterEach, startComfy } from './support/adapter-harness.js';
import { waitFor } from './support/wait.js';

// The simulated ComfyUI's own wire protocol: what a ComfyUI client sees on /prompt, /ws,
// /history, /view, /queue and /interrupt, its validation errors, and its command-line flags.

const cleanups = cleanupAfterEach();
const comfy = (options: Partial<ComfySimOptions> = {}) => startComfy(cleanups, options);

type Graph = Record<string, { class_type: string; inputs: Record<string, unknown> }>;

async function graph(
  changes: { width?: number; height?: number; steps?: number; seed?: number } = {},
): Promise<Graph> {
  const text = await readFile(
    new URL('../workers/diffusion/workflows/default.json', import.meta.url),
    'utf8',
  );
  const g = JSON.parse(text) as Graph;
  const byType = (t: string) => Object.values(g).find((n) => n.class_type === t) as Graph[string];
  Object.assign(byType('KSampler').inputs, { steps: changes.steps ?? 3, seed: changes.seed ?? 1 });
  Object.assign(byType('EmptyLatentImage').inputs, {
    width: changes.width ?? 64,
    height: changes.height ?? 64,
  });
  return g;
}

function post(sim: ComfySim, path: string, body: unknown): Promise<Response> {
  return fetch(`${sim.url}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
}

interface Message {
  type: string;
  data: Record<string, unknown>;
}

/** A /ws client that records every message. */
async function listen(sim: ComfySim, clientId: string): Promise<{ messages: Message[]; ws: WebSocket }> {
  const ws = new WebSocket(`${sim.url.replace('http', 'ws')}/ws?clientId=${clientId}`);
  const messages: Message[] = [];
  ws.on('message', (data) => messages.push(JSON.parse(data.toString()) as Message));
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
  });
  cleanups.push(() => ws.terminate());
  return { messages, ws };
}

const finished = (messages: Message[], id: string) =>
  messages.some((m) => m.type === 'executing' && m.data.node === null && m.data.prompt_id === id);

describe('simulated ComfyUI protocol', () => {
  it('runs a prompt: WebSocket messages, /history and /view as ComfyUI sends them', async () => {
    const sim = await comfy();
    const { messages } = await listen(sim, 'client-1');
    const res = await post(sim, '/prompt', {
      prompt: await graph({ steps: 4, width: 80 }),
      client_id: 'client-1',
    });
    expect(res.status).toBe(200);
    const accepted = (await res.json()) as { prompt_id: string; number: number; node_errors: unknown };
    expect(accepted).toMatchObject({ number: 0, node_errors: {} });
    const id = accepted.prompt_id;
    await waitFor('the prompt to finish', () => finished(messages, id));

    expect(messages[0]).toMatchObject({
      type: 'status',
      data: { status: { exec_info: { queue_remaining: 0 } } },
    });
    const ours = messages.filter((m) => m.data.prompt_id === id);
    const types = ours.map((m) => m.type);
    expect(types[0]).toBe('execution_start');
    expect(types.slice(-3)).toEqual(['executed', 'execution_success', 'executing']);
    const progress = ours
      .filter((m) => m.type === 'progress')
      .map((m) => [m.data.value, m.data.max, m.data.node]);
    expect(progress).toEqual([
      [1, 4, '3'],
      [2, 4, '3'],
      [3, 4, '3'],
      [4, 4, '3'],
    ]);
    // Dependencies run first: the sampler after the loader, encoders and latent; the save last.
    const order = ours.filter((m) => m.type === 'executing' && m.data.node !== null).map((m) => m.data.node);
    expect(order.indexOf('3')).toBeGreaterThan(order.indexOf('4'));
    expect(order.indexOf('3')).toBeGreaterThan(order.indexOf('5'));
    expect(order.at(-1)).toBe('9');
    const executed = ours.find((m) => m.type === 'executed') as Message;
    const images = (
      executed.data.output as { images: { filename: string; subfolder: string; type: string }[] }
    ).images;
    expect(images).toEqual([{ filename: 'mcp-cluster_00001_.png', subfolder: '', type: 'output' }]);

    const history = (await (await fetch(`${sim.url}/history/${id}`)).json()) as Record<
      string,
      Record<string, unknown>
    >;
    expect(history[id]).toMatchObject({
      outputs: { '9': { images } },
      status: { status_str: 'success', completed: true },
    });
    expect((history[id]?.prompt as unknown[] | undefined)?.[1]).toBe(id);

    const view = await fetch(`${sim.url}/view?filename=mcp-cluster_00001_.png&subfolder=&type=output`);
    expect(view.headers.get('content-type')).toBe('image/png');
    const png = PNG.sync.read(Buffer.from(await view.arrayBuffer()));
    expect([png.width, png.height]).toEqual([80, 64]);
    expect(sim.stats()).toMatchObject({ prompts: 1, completed: 1, running: 0, pending: 0, wsConnections: 1 });
  });

  it('serves the API under /api too, and answers {} for an unknown history id', async () => {
    const sim = await comfy();
    const res = await fetch(`${sim.url}/api/history/nope`);
    expect(await res.json()).toEqual({});
    const queue = await (await fetch(`${sim.url}/api/queue`)).json();
    expect(queue).toEqual({ queue_running: [], queue_pending: [] });
  });

  it('rounds sizes down to a multiple of 8, as latents are 1/8 of the image', async () => {
    const sim = await comfy();
    const { messages } = await listen(sim, 'c');
    const { prompt_id: id } = (await (
      await post(sim, '/prompt', { prompt: await graph({ width: 100, height: 70 }), client_id: 'c' })
    ).json()) as { prompt_id: string };
    await waitFor('the prompt to finish', () => finished(messages, id));
    const view = await fetch(`${sim.url}/view?filename=mcp-cluster_00001_.png&type=output`);
    const png = PNG.sync.read(Buffer.from(await view.arrayBuffer()));
    expect([png.width, png.height]).toEqual([96, 64]);
  });

  it('honours a client-chosen prompt_id and refuses to reuse one', async () => {
    const sim = await comfy();
    const first = await post(sim, '/prompt', { prompt: await graph(), prompt_id: 'mine-1' });
    expect(((await first.json()) as { prompt_id: string }).prompt_id).toBe('mine-1');
    const again = await post(sim, '/prompt', { prompt: await graph(), prompt_id: 'mine-1' });
    expect(again.status).toBe(400);
  });

  it('queues prompts FIFO behind the running one; /queue delete and clear remove pending ones', async () => {
    const sim = await comfy({ stepsPerSecond: 5 });
    const submit = async () =>
      (
        (await (await post(sim, '/prompt', { prompt: await graph({ steps: 10_000 }) })).json()) as {
          prompt_id: string;
        }
      ).prompt_id;
    const a = await submit();
    const b = await submit();
    const c = await submit();
    const d = await submit();
    const queue = (await (await fetch(`${sim.url}/queue`)).json()) as {
      queue_running: unknown[][];
      queue_pending: unknown[][];
    };
    expect(queue.queue_running.map((q) => q[1])).toEqual([a]);
    expect(queue.queue_pending.map((q) => q[1])).toEqual([b, c, d]);

    expect((await post(sim, '/queue', { delete: [c, 'unknown'] })).status).toBe(200);
    expect(sim.stats()).toMatchObject({ pending: 2, deleted: 1 });
    // Interrupting another prompt than the running one does nothing.
    await post(sim, '/interrupt', { prompt_id: b });
    expect(sim.stats()).toMatchObject({ running: 1, interrupted: 0 });
    await post(sim, '/queue', { clear: true });
    expect(sim.stats()).toMatchObject({ pending: 0, deleted: 3 });
    await post(sim, '/interrupt', { prompt_id: a });
    await waitFor('the interrupt', () => sim.stats().running === 0);
    expect(sim.stats().interrupted).toBe(1);
    const history = (await (await fetch(`${sim.url}/history/${a}`)).json()) as Record<
      string,
      { status: { status_str: string; completed: boolean } }
    >;
    expect(history[a]?.status).toMatchObject({ status_str: 'error', completed: false });
  });

  it('an interrupt with no body stops whatever runs, with execution_interrupted', async () => {
    const sim = await comfy({ stepsPerSecond: 5 });
    const { messages } = await listen(sim, 'c');
    const { prompt_id: id } = (await (
      await post(sim, '/prompt', { prompt: await graph({ steps: 10_000 }), client_id: 'c' })
    ).json()) as { prompt_id: string };
    await waitFor('the prompt to start', () => messages.some((m) => m.type === 'execution_start'));
    await fetch(`${sim.url}/interrupt`, { method: 'POST' });
    await waitFor('the prompt to end', () => finished(messages, id));
    expect(messages.find((m) => m.type === 'execution_interrupted')?.data).toMatchObject({ prompt_id: id });
  });

  it('sends execution_error in exec-error mode and stalls silently in stall mode', async () => {
    const sim = await comfy({ failure: 'exec-error' });
    const { messages } = await listen(sim, 'c');
    const { prompt_id: id } = (await (
      await post(sim, '/prompt', { prompt: await graph(), client_id: 'c' })
    ).json()) as {
      prompt_id: string;
    };
    await waitFor('the prompt to end', () => finished(messages, id));
    const error = messages.find((m) => m.type === 'execution_error');
    expect(error?.data).toMatchObject({ prompt_id: id, node_id: '3', node_type: 'KSampler' });
    expect(String(error?.data.exception_message)).toContain('GPU memory');

    const fail = await post(sim, '/sim/fail', { mode: 'stall' });
    expect(await fail.json()).toEqual({ mode: 'stall' });
    const { prompt_id: stalled } = (await (
      await post(sim, '/prompt', { prompt: await graph(), client_id: 'c' })
    ).json()) as { prompt_id: string };
    await waitFor('the prompt to be running', () => sim.stats().running === 1);
    const before = messages.length;
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(messages.slice(before).filter((m) => m.data.prompt_id === stalled)).toEqual([]);
    await post(sim, '/interrupt', { prompt_id: stalled });
    await waitFor('the stalled prompt to stop', () => sim.stats().running === 0);
    const stats = (await (await fetch(`${sim.url}/sim/stats`)).json()) as Record<string, unknown>;
    expect(stats).toMatchObject({ failed: 1, interrupted: 1, failure: 'stall' });
  });

  it('answers 5xx and non-JSON on POST /prompt in those modes', async () => {
    const sim = await comfy({ failure: '5xx' });
    expect((await post(sim, '/prompt', { prompt: await graph() })).status).toBe(500);
    sim.setFailure('malformed');
    const res = await post(sim, '/prompt', { prompt: await graph() });
    expect(res.status).toBe(200);
    await expect(res.json()).rejects.toThrow();
    expect(sim.stats().prompts).toBe(0);
  });

  it('drops the WebSocket after the first step in drop-ws mode, and keeps running the prompt', async () => {
    const sim = await comfy({ failure: 'drop-ws' });
    const { ws } = await listen(sim, 'c');
    const closed = new Promise<void>((resolve) => ws.once('close', () => resolve()));
    const { prompt_id: id } = (await (
      await post(sim, '/prompt', { prompt: await graph(), client_id: 'c' })
    ).json()) as {
      prompt_id: string;
    };
    await closed;
    await waitFor('the prompt to complete', () => sim.stats().completed === 1);
    const history = (await (await fetch(`${sim.url}/history/${id}`)).json()) as Record<string, unknown>;
    expect(history[id]).toBeDefined();
  });

  it('serves /system_stats, /object_info and GET /prompt', async () => {
    const sim = await comfy();
    const stats = (await (await fetch(`${sim.url}/system_stats`)).json()) as { devices: { type: string }[] };
    expect(stats.devices[0]?.type).toBe('cuda');
    const info = (await (await fetch(`${sim.url}/object_info`)).json()) as Record<
      string,
      { output_node: boolean }
    >;
    expect(info.KSampler).toBeDefined();
    expect(info.SaveImage?.output_node).toBe(true);
    const one = (await (await fetch(`${sim.url}/object_info/EmptyLatentImage`)).json()) as Record<
      string,
      unknown
    >;
    expect(Object.keys(one)).toEqual(['EmptyLatentImage']);
    expect(await (await fetch(`${sim.url}/prompt`)).json()).toEqual({ exec_info: { queue_remaining: 0 } });
  });
});

describe('simulated ComfyUI validation and hostile input', () => {
  const refused = async (sim: ComfySim, body: unknown) => {
    const res = await post(sim, '/prompt', body);
    expect(res.status).toBe(400);
    return (await res.json()) as {
      error: { type: string; message: string; details: string };
      node_errors: Record<
        string,
        { errors: { type: string; message: string; details: string }[]; class_type: string }
      >;
    };
  };

  it('refuses a graph without a KSampler, naming the node', async () => {
    const sim = await comfy();
    const g = await graph();
    // The decoder reads the empty latent directly.
    (g['8'] as Graph[string]).inputs.samples = ['5', 0];
    delete g['3'];
    const body = await refused(sim, { prompt: g });
    expect(body.error.type).toBe('prompt_outputs_failed_validation');
    expect(body.node_errors['9']?.errors[0]?.type).toBe('sim_no_sampler');
  });

  it('refuses a graph without an output node, an unknown node type, a missing input and no prompt', async () => {
    const sim = await comfy();
    const noSave = await graph();
    delete noSave['9'];
    expect((await refused(sim, { prompt: noSave })).error.type).toBe('prompt_no_outputs');

    const unknown = await graph();
    (unknown['4'] as Graph[string]).class_type = 'FancyLoader';
    const u = await refused(sim, { prompt: unknown });
    expect(u.error).toMatchObject({
      type: 'invalid_prompt',
      message: 'Cannot execute because node FancyLoader does not exist.',
    });

    const missing = await graph();
    delete (missing['3'] as Graph[string]).inputs.positive;
    const m = await refused(sim, { prompt: missing });
    expect(m.node_errors['3']?.errors[0]).toMatchObject({
      type: 'required_input_missing',
      details: 'positive',
    });

    const wrongLink = await graph();
    (wrongLink['3'] as Graph[string]).inputs.positive = ['4', 0];
    const w = await refused(sim, { prompt: wrongLink });
    expect(w.node_errors['3']?.errors[0]?.type).toBe('return_type_mismatch');

    const badSampler = await graph();
    (badSampler['3'] as Graph[string]).inputs.sampler_name = 'magic';
    const b = await refused(sim, { prompt: badSampler });
    expect(b.node_errors['3']?.errors[0]?.type).toBe('value_not_in_list');

    expect((await refused(sim, { client_id: 'x' })).error.type).toBe('no_prompt');
    expect((await refused(sim, { prompt: [] })).error.type).toBe('invalid_prompt');
    expect(sim.stats()).toMatchObject({ prompts: 0, rejected: 7 });
  });

  it('refuses huge sizes and batches', async () => {
    const sim = await comfy();
    const huge = await refused(sim, { prompt: await graph({ width: 9000 }) });
    expect(huge.node_errors['5']?.errors[0]).toMatchObject({
      type: 'value_bigger_than_max',
      details: 'width',
    });
    const batch = await graph({ width: 8192, height: 8192 });
    (batch['5'] as Graph[string]).inputs.batch_size = 4;
    expect((await refused(sim, { prompt: batch })).node_errors['5']?.errors[0]?.details).toBe('batch_size');
  });

  it('answers bad JSON, wrong methods, unknown routes, bad /view names and big bodies with 4xx, and survives', async () => {
    const sim = await comfy({ maxBodyBytes: 1024 });
    expect((await post(sim, '/prompt', '{not json')).status).toBe(400);
    expect((await post(sim, '/queue', '[1,2')).status).toBe(400);
    expect((await post(sim, '/sim/fail', { mode: 'explode' })).status).toBe(400);
    expect((await fetch(`${sim.url}/nowhere`)).status).toBe(404);
    expect((await fetch(`${sim.url}/interrupt`)).status).toBe(405);
    expect((await fetch(`${sim.url}/view?filename=../../etc/passwd`)).status).toBe(400);
    expect((await fetch(`${sim.url}/view?filename=nope.png`)).status).toBe(404);
    expect((await fetch(`${sim.url}/view?filename=a.png&type=secret`)).status).toBe(400);
    expect((await fetch(`${sim.url}/ws`)).status).toBe(400);
    expect((await post(sim, '/prompt', { prompt: 'x'.repeat(4096) })).status).toBe(413);
    expect((await fetch(`${sim.url}/queue`)).status).toBe(200);
  });

  it('refuses a WebSocket upgrade on any other path', async () => {
    const sim = await comfy();
    const ws = new WebSocket(`${sim.url.replace('http', 'ws')}/elsewhere`);
    const status = await new Promise<number>((resolve) => {
      ws.once('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0));
      ws.once('error', () => resolve(-1));
    });
    expect(status).toBe(404);
    ws.terminate();
  });
});

describe('parseComfySimArgs', () => {
  it('parses kebab-case flags and accepts --kind comfyui', () => {
    expect(
      parseComfySimArgs([
        '--kind',
        'comfyui',
        '--port',
        '8188',
        '--steps-per-second=2.5',
        '--failure',
        'stall',
      ]),
    ).toEqual({ port: 8188, stepsPerSecond: 2.5, failure: 'stall' });
  });

  it('names an unknown flag or a bad value', () => {
    expect(() => parseComfySimArgs(['--gpus', '2'])).toThrow(/--gpus/);
    expect(() => parseComfySimArgs(['--port', 'abc'])).toThrow(/--port.*abc/);
    expect(() => parseComfySimArgs(['--steps-per-second', '0'])).toThrow(/--steps-per-second/);
    expect(() => parseComfySimArgs(['--failure', 'explode'])).toThrow(/--failure.*explode/);
    expect(() => parseComfySimArgs(['--kind', 'vllm'])).toThrow(/--kind/);
    expect(() => parseComfySimArgs(['--port'])).toThrow(/--port needs a value/);
  });

  it('startComfySim rejects bad options naming them', async () => {
    await expect(startComfySim({ stepsPerSecond: -1 })).rejects.toThrow(/stepsPerSecond/);
    await expect(startComfySim({ failure: 'boom' as never })).rejects.toThrow(/failure/);
  });
});
