import { randomUUID } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  Client as ClientV2,
  ProtocolError,
  StreamableHTTPClientTransport as TransportV2,
} from '@modelcontextprotocol/client';
import { createTaskSessionFromClient, resultFromTaskOutcome } from '@modelcontextprotocol/ext-tasks/client';
import {
  CreateTaskResultV2Schema,
  DetailedTaskV2Schema,
  GetTaskResultV2Schema,
  TASKS_EXTENSION_ID_V2,
} from '@modelcontextprotocol/ext-tasks/core/v2';
import { Client as ClientV1 } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport as TransportV1 } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import {
  CallToolResultSchema,
  CreateTaskResultSchema,
  McpError,
  RELATED_TASK_META_KEY,
} from '@modelcontextprotocol/sdk/types.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { openBroker } from '../services/cli/index.js';
import {
  type Broker,
  createLogger,
  inProcessDelivery,
  type JobStore,
  openMemoryJobStore,
  type ResolvedConfig,
} from '../services/core/index.js';
import { createApiKey, type Ingress, keysFileEntry, startIngress } from '../services/ingress/index.js';
import { type BatchJobs, batchJobDelivery, createBatchJobs } from '../services/jobs/index.js';
import { embedAdapter } from '../workers/embeddings/index.js';
import { startWorker, type Worker } from '../workers/runtime/index.js';
import { type SimBackend, startSimBackend } from '../workers/sim/index.js';
import { type SpawnedBroker, startNatsServer } from './support/brokers.js';
import { resolveConfig } from './support/families.js';
import { removeTempDir, trackTempDir } from './support/process-guard.js';
import { type RoleProcess, startRole, writeConfig } from './support/processes.js';
import { sleep, waitFor } from './support/wait.js';

const TEXTS = ['the first text of the batch', 'a second one', 'and a third, somewhat longer, text'];
const MODERN = '2026-07-28';
/** A job id of the engine's shape that no job has. */
const UNKNOWN_ID = 'batch_AAAAAAAAAAAAAAAAAAAAAA';
/** Any JSON object: for `client.request` answers whose shape the test checks itself. */
const AnyObject = z.looseObject({});

interface BatchResult {
  content: { type: string; text?: string }[];
  structuredContent?: {
    job_id: string;
    status: string;
    counts: { total: number; completed: number; failed: number };
    ids?: string[];
    vectors?: number[][];
    output_file_id?: string;
  };
  isError?: boolean;
  _meta?: Record<string, unknown>;
}

/** An API key, or the headers that identify the caller (`Mcp-Cluster-Tenant` without auth). */
type Credential = string | Record<string, string>;
const headersOf = (credential: Credential): Record<string, string> =>
  typeof credential === 'string' ? { 'x-api-key': credential } : credential;

/** A v1 (2025-era) client that declares the tasks capability. */
const connectV1 = async (url: string, credential: Credential) => {
  const client = new ClientV1(
    { name: 'batch-tasks-v1', version: '1.0.0' },
    { capabilities: { tasks: { list: {}, cancel: {}, requests: {} } } },
  );
  await client.connect(new TransportV1(new URL(url), { requestInit: { headers: headersOf(credential) } }));
  return client;
};
/** A v2 client on 2026-07-28; `tasks`: it declares the tasks extension in its capabilities. */
const connectV2 = async (url: string, credential: Credential, tasks: boolean) => {
  const client = new ClientV2(
    { name: 'batch-tasks-v2', version: '1.0.0' },
    {
      versionNegotiation: { mode: { pin: MODERN } },
      ...(tasks ? { capabilities: { extensions: { [TASKS_EXTENSION_ID_V2]: {} } } } : {}),
    },
  );
  await client.connect(new TransportV2(new URL(url), { requestInit: { headers: headersOf(credential) } }));
  return client;
};

const expectSameVectors = (got: number[][] | undefined, expected: number[][]) => {
  expect(got).toHaveLength(expected.length);
  got?.forEach((vector, i) => {
    expect(vector).toHaveLength(expected[i]?.length ?? -1);
    // Batch outputs are stored as float32.
    vector.forEach((v, d) => {
      expect(v).toBeCloseTo(expected[i]?.[d] ?? Number.NaN, 6);
    });
  });
};

let rpcId = 0;
/**
 * One 2026-07-28 JSON-RPC request over plain HTTP, with the standard headers (`Mcp-Name` is the
 * tool name or the task id) and, unless `params._meta` has them, the request envelope.
 */
const post2026 = async (
  url: string,
  credential: Credential,
  request: { method: string; params?: Record<string, unknown> },
  signal?: AbortSignal,
  headers: Record<string, string> = {},
): Promise<{
  result?: Record<string, unknown>;
  error?: { code: number; message: string; data?: unknown };
}> => {
  const params = request.params ?? {};
  const meta = (params._meta as Record<string, unknown> | undefined) ?? {
    'io.modelcontextprotocol/protocolVersion': MODERN,
    'io.modelcontextprotocol/clientInfo': { name: 'raw', version: '1.0.0' },
    'io.modelcontextprotocol/clientCapabilities': { extensions: { [TASKS_EXTENSION_ID_V2]: {} } },
  };
  const name = request.method === 'tools/call' ? params.name : params.taskId;
  const res = await fetch(url, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      accept: 'application/json, text/event-stream',
      'mcp-protocol-version': MODERN,
      'mcp-method': request.method,
      ...(typeof name === 'string' ? { 'mcp-name': name } : {}),
      ...headersOf(credential),
      ...headers,
    },
    body: JSON.stringify({
      jsonrpc: '2.0',
      id: ++rpcId,
      method: request.method,
      params: { ...params, _meta: meta },
    }),
    ...(signal ? { signal } : {}),
  });
  const text = await res.text();
  const data = text.startsWith('{') ? text : (/^data: (.*)$/m.exec(text)?.[1] ?? '{}');
  return JSON.parse(data);
};

/** Rejects with the JSON-RPC error code `promise` failed with. */
const codeOf = async (promise: Promise<unknown>): Promise<number> => {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  if (err instanceof McpError || err instanceof ProtocolError) return err.code;
  throw new Error(`expected a JSON-RPC error, got ${err instanceof Error ? err.message : String(err)}`);
};

/**
 * Runs embed_batch on `texts` as a 2026-07-28 task with the ext-tasks session over a v2 client
 * connected to `urls[0]`. The session's wire requests go over plain HTTP (the v2 client refuses a
 * `resultType: "task"` answer), alternating between `urls` so that a task created on one replica
 * is polled on another, and each answer is checked against the extension's schemas. `served`
 * lists `method@index of the url` in order.
 */
async function runWithExtTasks(urls: string[], credential: Credential, texts: string[]) {
  const client = await connectV2(urls[0] as string, credential, false);
  const served: string[] = [];
  let turn = 0;
  const session = createTaskSessionFromClient(client, {
    endpointId: 'batch-tasks',
    rawDispatch: async (request, options) => {
      const index = turn++ % urls.length;
      const call = request as { method: string; params?: Record<string, unknown> };
      served.push(`${call.method}@${index}`);
      const answer = await post2026(urls[index] as string, credential, call, options?.signal);
      if (answer.error) return { kind: 'error', error: answer.error as never };
      if (call.method === 'tools/call')
        expect(CreateTaskResultV2Schema.safeParse(answer.result).success).toBe(true);
      if (call.method === 'tasks/get')
        expect(GetTaskResultV2Schema.safeParse(answer.result).success).toBe(true);
      return { kind: 'result', result: answer.result as never };
    },
    v2RequestFraming: {
      protocolVersion: MODERN,
      clientInfo: { name: 'batch-tasks-v2', version: '1.0.0' },
      clientCapabilities: {},
    },
  });
  try {
    expect(client.getServerCapabilities()?.extensions).toEqual({ [TASKS_EXTENSION_ID_V2]: {} });
    expect(client.getServerCapabilities()).not.toHaveProperty('tasks');
    const listed = (await client.listTools()).tools.find((t) => t.name === 'embed_batch');
    expect(listed).toBeDefined();
    expect(listed).not.toHaveProperty('execution');

    const execution = await session.callTool('embed_batch', { texts });
    expect(execution.kind).toBe('task');
    const taskId = execution.handle?.taskId as string;
    expect(taskId).toMatch(/^batch_/);
    const { outcome } = await execution.settle();
    expect(outcome.status).toBe('completed');
    const result = resultFromTaskOutcome(outcome) as unknown as BatchResult;
    // The same task, read again through the session's controller: it stays completed.
    expect((await session.task(taskId as never).snapshot()).status).toBe('completed');
    return { taskId, result, served };
  } finally {
    await session.close();
    await client.close();
  }
}

// embed_batch as an MCP Task, end to end: two ingress replicas over one memory queue and job store
// (each with its own engine, as in a deployment), one embeddings worker writing batch chunks into
// the store, API keys for two tenants. Each task shape is driven by a client library: the v1 SDK's
// experimental tasks for 2025-11-25, and for 2026-07-28 the v2 client with the ext-tasks session,
// whose wire requests go through a raw JSON-RPC dispatcher (the v2 client refuses a
// `resultType: "task"` answer) that alternates between the two replicas.
describe('embed_batch as an MCP Task (two replicas, API keys)', () => {
  let sim: SimBackend;
  let broker: Broker;
  let store: JobStore;
  let config: ResolvedConfig;
  let engines: (BatchJobs & { close(): Promise<void> })[] = [];
  let replicas: Ingress[] = [];
  let worker: Worker;
  let dir = '';
  const acme = createApiKey({ tenant: 'acme', scopes: ['pool:embeddings'], name: 'agent-1' });
  const acmeOther = createApiKey({ tenant: 'acme', scopes: ['pool:embeddings'], name: 'agent-2' });
  const globex = createApiKey({ tenant: 'globex', scopes: ['pool:embeddings'] });
  const narrow = createApiKey({ tenant: 'acme', scopes: [] });

  beforeAll(async () => {
    sim = await startSimBackend({ embeddingDimensions: 8 });
    dir = mkdtempSync(join(tmpdir(), 'mcp-cluster-batch-tasks-'));
    trackTempDir(dir);
    const keysFile = join(dir, 'keys.yaml');
    writeFileSync(
      keysFile,
      `keys:\n${[acme, acmeOther, globex, narrow].map((k) => keysFileEntry(k.entry)).join('\n')}\n`,
    );
    config = resolveConfig(`
cluster: { namespace: batch-tasks }
ingress: { port: 0 }
batch: { chunkSize: 2 }
auth:
  mode: api-keys
  tenants: [acme, globex]
  apiKeys: { file: "${keysFile}" }
pools:
  embeddings: { backend: openai-embeddings, scopes: [pool:embeddings], endpoints: [{ url: "${sim.url}" }] }
  idle: { backend: openai-embeddings, endpoints: [{ url: "${sim.url}" }] }
tools:
  - { name: embed, template: embed, pool: embeddings, model: sim-embed, cache: { enabled: false } }
  - { name: embed_idle, template: embed, pool: idle, model: sim-embed, description: "A pool no worker serves: its jobs wait." }
`);
    broker = await openBroker({ url: 'memory:', namespace: 'batch-tasks', pools: ['embeddings', 'idle'] });
    store = openMemoryJobStore();
    const delivery = inProcessDelivery();
    engines = [0, 1].map(() => createBatchJobs({ store, queue: broker.queue, config }));
    replicas = await Promise.all(engines.map((jobs) => startIngress(config, broker, delivery, { jobs })));
    worker = await startWorker({
      config,
      pool: 'embeddings',
      broker,
      adapters: { embed: embedAdapter },
      delivery: batchJobDelivery(delivery, store, createLogger('batch')),
      workerId: 'batch-tasks-worker',
      serveHttp: false,
    });
  });

  afterAll(async () => {
    await Promise.all(replicas.map((r) => r.shutdown()));
    await worker?.shutdown();
    await Promise.all(engines.map((e) => e.close()));
    await store?.close();
    await broker?.close();
    await sim?.close();
    if (dir) removeTempDir(dir);
  });

  const urlA = () => replicas[0]?.url as string;
  const urlB = () => replicas[1]?.url as string;

  /** The vectors the interactive `embed` tool returns for `texts`. */
  const embedded = async (texts: string[]) => {
    const client = await connectV1(urlA(), acme.key);
    try {
      const result = (await client.callTool({ name: 'embed', arguments: { texts } })) as BatchResult;
      expect(result.isError).toBeFalsy();
      return result.structuredContent?.vectors as number[][];
    } finally {
      await client.close();
    }
  };
  describe('2025-11-25 task shape, v1 client (experimental tasks)', () => {
    it('lists embed_batch as task-capable and advertises the tasks capability', async () => {
      const client = await connectV1(urlA(), acme.key);
      try {
        expect(client.getServerCapabilities()?.tasks).toEqual({
          list: {},
          cancel: {},
          requests: { tools: { call: {} } },
        });
        const tools = await client.listTools();
        expect(tools.tools.map((t) => t.name).sort()).toEqual(['embed', 'embed_batch', 'embed_idle']);
        expect(tools.tools.find((t) => t.name === 'embed_batch')?.execution).toEqual({
          taskSupport: 'optional',
        });
      } finally {
        await client.close();
      }
      // A key without the embed tool's scope sees neither embed nor embed_batch.
      const hidden = await connectV1(urlA(), narrow.key);
      try {
        expect((await hidden.listTools()).tools.map((t) => t.name)).toEqual(['embed_idle']);
      } finally {
        await hidden.close();
      }
      // ...and a call to embed_batch is challenged for the scope, as a call to embed would be.
      const challenged = await fetch(urlA(), {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          accept: 'application/json, text/event-stream',
          'x-api-key': narrow.key,
        },
        body: JSON.stringify({
          jsonrpc: '2.0',
          id: 1,
          method: 'tools/call',
          params: { name: 'embed_batch', arguments: { texts: TEXTS }, task: {} },
        }),
      });
      expect(challenged.status).toBe(403);
      expect(challenged.headers.get('www-authenticate')).toContain('scope="pool:embeddings"');
    });

    it('creates a task, polls it to completion and reads the vectors, also from the other replica', async () => {
      const client = await connectV1(urlA(), acme.key);
      let taskId = '';
      try {
        await client.listTools(); // the client validates structuredContent against the listed outputSchema
        const messages: { type: string; task?: { taskId: string; status: string }; result?: unknown }[] = [];
        for await (const message of client.experimental.tasks.callToolStream(
          { name: 'embed_batch', arguments: { texts: TEXTS } },
          CallToolResultSchema,
          { task: { ttl: 60_000 } },
        ))
          messages.push(message as never);
        const created = messages[0] as { type: string; task: Record<string, unknown> };
        expect(created.type).toBe('taskCreated');
        expect(created.task).toMatchObject({ status: 'working' });
        expect(created.task.taskId).toMatch(/^batch_[A-Za-z0-9_-]{22}$/);
        expect(typeof created.task.ttl).toBe('number');
        expect(new Date(created.task.createdAt as string).toISOString()).toBe(created.task.createdAt);
        taskId = created.task.taskId as string;
        const last = messages.at(-1) as { type: string; result: BatchResult };
        expect(messages.map((m) => m.type)).toContain('taskStatus');
        expect(last.type).toBe('result');
        expect(last.result.isError).toBeFalsy();
        expect(last.result.structuredContent).toMatchObject({
          job_id: taskId,
          status: 'completed',
          counts: { total: 3, completed: 3, failed: 0 },
          ids: ['0', '1', '2'],
        });
        expectSameVectors(last.result.structuredContent?.vectors, await embedded(TEXTS));
      } finally {
        await client.close();
      }

      // Another principal of the tenant, on the other replica: the job store answers.
      const other = await connectV1(urlB(), acmeOther.key);
      try {
        const task = await other.experimental.tasks.getTask(taskId);
        expect(task).toMatchObject({ taskId, status: 'completed' });
        const result = (await other.experimental.tasks.getTaskResult(
          taskId,
          CallToolResultSchema,
        )) as BatchResult;
        expect(result._meta?.[RELATED_TASK_META_KEY]).toEqual({ taskId });
        expectSameVectors(result.structuredContent?.vectors, await embedded(TEXTS));
        const listed = await other.experimental.tasks.listTasks();
        expect(listed.tasks.map((t) => t.taskId)).toContain(taskId);
        // A final task cannot be cancelled.
        expect(await codeOf(other.experimental.tasks.cancelTask(taskId))).toBe(-32602);
      } finally {
        await other.close();
      }

      // Another tenant, and a key whose scopes hide the pool: the id names nothing of theirs.
      for (const key of [globex.key, narrow.key]) {
        const stranger = await connectV1(urlB(), key);
        try {
          expect(await codeOf(stranger.experimental.tasks.getTask(taskId))).toBe(-32602);
          expect(await codeOf(stranger.experimental.tasks.getTaskResult(taskId, CallToolResultSchema))).toBe(
            -32602,
          );
          expect(await codeOf(stranger.experimental.tasks.cancelTask(taskId))).toBe(-32602);
          const listed = await stranger.experimental.tasks.listTasks();
          expect(listed.tasks.map((t) => t.taskId)).not.toContain(taskId);
        } finally {
          await stranger.close();
        }
      }
    });

    it('cancels a working task, answers unknown ids with -32602', async () => {
      const client = await connectV1(urlA(), acme.key);
      try {
        // No worker serves pool idle: the job stays working until cancelled.
        const created = await client.request(
          {
            method: 'tools/call',
            params: { name: 'embed_batch', arguments: { texts: TEXTS, pool: 'idle' }, task: { ttl: 60_000 } },
          },
          CreateTaskResultSchema,
        );
        const { taskId } = created.task;
        expect(created.task.status).toBe('working');
        expect(created.task.pollInterval).toBeGreaterThan(0);
        expect(created._meta?.['io.modelcontextprotocol/model-immediate-response']).toContain(taskId);
        expect((await client.experimental.tasks.getTask(taskId)).status).toBe('working');

        // tasks/result blocks while the task works, and answers once it is final (here: cancelled
        // through the other replica).
        let settled = false;
        const pending = client.experimental.tasks.getTaskResult(taskId, CallToolResultSchema).finally(() => {
          settled = true;
        });
        await sleep(300);
        expect(settled).toBe(false);
        const other = await connectV1(urlB(), acmeOther.key);
        try {
          const cancelled = await other.experimental.tasks.cancelTask(taskId);
          expect(cancelled).toMatchObject({ taskId, status: 'cancelled' });
        } finally {
          await other.close();
        }
        const result = (await pending) as BatchResult;
        expect(result.isError).toBe(true);
        expect(result.structuredContent?.status).toBe('cancelled');
        expect(result._meta?.[RELATED_TASK_META_KEY]).toEqual({ taskId });
        expect((await client.experimental.tasks.getTask(taskId)).status).toBe('cancelled');
        expect(await codeOf(client.experimental.tasks.cancelTask(taskId))).toBe(-32602);

        for (const id of [UNKNOWN_ID, 'not-a-task', '../../etc/passwd', '']) {
          expect(await codeOf(client.experimental.tasks.getTask(id))).toBe(-32602);
          expect(await codeOf(client.experimental.tasks.getTaskResult(id, CallToolResultSchema))).toBe(
            -32602,
          );
          expect(await codeOf(client.experimental.tasks.cancelTask(id))).toBe(-32602);
        }
      } finally {
        await client.close();
      }
    });
  });

  describe('2026-07-28 tasks extension, v2 client (ext-tasks session, raw JSON-RPC dispatch)', () => {
    it('advertises the extension, creates a task, polls it across replicas and gets the vectors', async () => {
      const { taskId, result, served } = await runWithExtTasks([urlA(), urlB()], acme.key, TEXTS);
      expect(result.structuredContent).toMatchObject({
        job_id: taskId,
        status: 'completed',
        ids: ['0', '1', '2'],
      });
      expectSameVectors(result.structuredContent?.vectors, await embedded(TEXTS));
      expect(served[0]).toBe('tools/call@0');
      expect(served.filter((s) => s.startsWith('tasks/get')).length).toBeGreaterThan(0);
      expect(new Set(served.map((s) => s.slice(-1)))).toEqual(new Set(['0', '1']));
    });

    it('drives tasks/get, tasks/update and tasks/cancel with the v2 client itself; refuses strangers', async () => {
      // The v2 client cannot take the `resultType: "task"` answer of tools/call, so the task is
      // created over plain HTTP; the task methods then go through the client (with Mcp-Name).
      const created = await post2026(urlA(), acme.key, {
        method: 'tools/call',
        params: { name: 'embed_batch', arguments: { texts: TEXTS, pool: 'idle' } },
      });
      const task = CreateTaskResultV2Schema.parse(created.result);
      expect(task).toMatchObject({ resultType: 'task', status: 'working' });
      expect(task.ttlMs).toBeGreaterThan(0);
      const { taskId } = task;

      const client = await connectV2(urlB(), acmeOther.key, true);
      try {
        const working = await client.request(
          { method: 'tasks/get', params: { taskId } },
          DetailedTaskV2Schema,
        );
        expect(working).toMatchObject({ taskId, status: 'working' });
        expect(working.statusMessage).toContain('0 of 3');
        // A batch job never asks for input: responses are acknowledged and ignored.
        expect(
          await client.request(
            {
              method: 'tasks/update',
              params: { taskId, inputResponses: { anything: { action: 'cancel' } } },
            },
            AnyObject,
          ),
        ).not.toHaveProperty('error');
        await client.request({ method: 'tasks/cancel', params: { taskId } }, AnyObject);
        const cancelled = await client.request(
          { method: 'tasks/get', params: { taskId } },
          DetailedTaskV2Schema,
        );
        expect(cancelled.status).toBe('cancelled');
        expect(cancelled).not.toHaveProperty('result');
        // Cancelling again is acknowledged (the revision makes it a request, not a transition).
        await client.request({ method: 'tasks/cancel', params: { taskId } }, AnyObject);

        for (const id of [UNKNOWN_ID, 'not-a-task']) {
          expect(
            await codeOf(client.request({ method: 'tasks/get', params: { taskId: id } }, AnyObject)),
          ).toBe(-32602);
          expect(
            await codeOf(client.request({ method: 'tasks/cancel', params: { taskId: id } }, AnyObject)),
          ).toBe(-32602);
          expect(
            await codeOf(
              client.request(
                { method: 'tasks/update', params: { taskId: id, inputResponses: {} } },
                AnyObject,
              ),
            ),
          ).toBe(-32602);
        }
      } finally {
        await client.close();
      }

      // Another tenant. (A key of the tenant without the embeddings scope may follow this job: it
      // runs on pool idle, whose embed tool needs no scope.)
      for (const key of [globex.key]) {
        const stranger = await connectV2(urlA(), key, true);
        try {
          for (const method of ['tasks/get', 'tasks/cancel'])
            expect(await codeOf(stranger.request({ method, params: { taskId } }, AnyObject))).toBe(-32602);
          expect(
            await codeOf(
              stranger.request({ method: 'tasks/update', params: { taskId, inputResponses: {} } }, AnyObject),
            ),
          ).toBe(-32602);
        } finally {
          await stranger.close();
        }
      }

      // Tasks are routed by Mcp-Name, which must name the task (the SDK checks it); the 2025-only
      // methods do not exist on 2026-07-28.
      const misrouted = await post2026(
        urlA(),
        acme.key,
        { method: 'tasks/get', params: { taskId } },
        undefined,
        {
          'mcp-name': UNKNOWN_ID,
        },
      );
      expect(misrouted.error?.code).toBe(-32020);
      for (const method of ['tasks/result', 'tasks/list'])
        expect((await post2026(urlA(), acme.key, { method, params: { taskId } })).error?.code).toBe(-32601);

      // A request that does not declare the extension gets -32021, naming it.
      const undeclared = await connectV2(urlA(), acme.key, false);
      try {
        const err = await undeclared.request({ method: 'tasks/get', params: { taskId } }, AnyObject).then(
          () => undefined,
          (e: unknown) => e as ProtocolError,
        );
        expect(err?.code).toBe(-32021);
        expect(err?.data).toEqual({ requiredCapabilities: { extensions: { [TASKS_EXTENSION_ID_V2]: {} } } });
      } finally {
        await undeclared.close();
      }
    });
  });

  describe('without a task', () => {
    it('waits for a small inline job and answers its vectors (v1 and v2 clients)', async () => {
      const expected = await embedded(TEXTS);
      const v1 = await connectV1(urlA(), acme.key);
      try {
        const result = (await v1.callTool({
          name: 'embed_batch',
          arguments: { items: TEXTS.map((text, i) => ({ id: `doc-${i}`, text })) },
        })) as BatchResult;
        expect(result.isError).toBeFalsy();
        expect(result.structuredContent?.ids).toEqual(['doc-0', 'doc-1', 'doc-2']);
        expectSameVectors(result.structuredContent?.vectors, expected);
      } finally {
        await v1.close();
      }
      const v2 = await connectV2(urlB(), acme.key, false);
      try {
        const result = (await v2.callTool({
          name: 'embed_batch',
          arguments: { texts: TEXTS },
        })) as BatchResult;
        expect(result.isError).toBeFalsy();
        expectSameVectors(result.structuredContent?.vectors, expected);
      } finally {
        await v2.close();
      }
    });

    it('answers at once with the job id for a file, and at the deadline for a job still running', async () => {
      const client = await connectV1(urlA(), acme.key);
      try {
        const jsonl = TEXTS.map((text, i) => JSON.stringify({ id: `line-${i}`, text })).join('\n');
        const file = await engines[0]?.uploadFile(
          { tenant: 'acme', principal: 'key:test' },
          'input.jsonl',
          new TextEncoder().encode(jsonl),
        );
        const fromFile = (await client.callTool({
          name: 'embed_batch',
          arguments: { file_id: file?.id },
        })) as BatchResult;
        expect(fromFile.isError).toBeFalsy();
        const jobId = fromFile.structuredContent?.job_id as string;
        expect(fromFile.structuredContent?.vectors).toBeUndefined();
        expect(fromFile.content[0]?.text).toContain(`tasks/get ${jobId}`);
        // The job is a task like any other.
        await waitFor('the file job to complete', async () => {
          return (await client.experimental.tasks.getTask(jobId)).status === 'completed';
        });
        const result = (await client.experimental.tasks.getTaskResult(
          jobId,
          CallToolResultSchema,
        )) as BatchResult;
        expect(result.structuredContent?.ids).toEqual(['line-0', 'line-1', 'line-2']);

        const started = Date.now();
        const waiting = (await client.callTool({
          name: 'embed_batch',
          arguments: { texts: TEXTS, pool: 'idle' },
          _meta: { 'mcp-cluster/timeout-ms': 300 },
        })) as BatchResult;
        expect(Date.now() - started).toBeGreaterThanOrEqual(250);
        expect(waiting.isError).toBeFalsy();
        expect(waiting.structuredContent).toMatchObject({ status: 'in_progress', counts: { completed: 0 } });
        await client.experimental.tasks.cancelTask(waiting.structuredContent?.job_id as string);

        const refused = (await client.callTool({
          name: 'embed_batch',
          arguments: { texts: TEXTS, file_id: file?.id },
        })) as BatchResult;
        expect(refused.isError).toBe(true);
        expect(refused.content[0]?.text).toContain('only one of texts, items or file_id');
        const unknownFile = (await client.callTool({
          name: 'embed_batch',
          arguments: { file_id: 'file-AAAAAAAAAAAAAAAAAAAAAA' },
        })) as BatchResult;
        expect(unknownFile.isError).toBe(true);
      } finally {
        await client.close();
      }
    });
  });
});

// The same task flows across OS processes: two `mcp-cluster ingress` replicas and an embeddings
// worker on NATS JetStream, whose KV and Object Store hold the jobs. Without auth on loopback, the
// tenant is the `Mcp-Cluster-Tenant` header.
describe('embed_batch as an MCP Task across processes on NATS JetStream', () => {
  let broker: SpawnedBroker;
  let sim: RoleProcess;
  const roles: RoleProcess[] = [];
  const acme = { 'mcp-cluster-tenant': 'acme' };
  const globex = { 'mcp-cluster-tenant': 'globex' };
  const url = (i: number) => String(roles[i]?.ready.url);

  beforeAll(async () => {
    broker = await startNatsServer();
    sim = await startRole('sim', ['sim', '--port', '0']);
    const configPath = writeConfig(`
cluster: { namespace: tasks${randomUUID().slice(0, 8)} }
broker: { url: "${broker.url}" }
ingress: { port: 0, sessionSecret: "tasks-${randomUUID()}" }
batch: { chunkSize: 2 }
pools:
  embeddings: { backend: openai-embeddings, endpoints: [{ url: "${String(sim.ready.url)}" }] }
tools:
  - { name: embed, template: embed, pool: embeddings, model: sim-embed }
`);
    roles.push(
      ...(await Promise.all([
        startRole('ingress-a', ['ingress', '--config', configPath]),
        startRole('ingress-b', ['ingress', '--config', configPath]),
        startRole('worker-embeddings', ['worker', '--pool', 'embeddings', '--config', configPath]),
      ])),
    );
  }, 60_000);

  afterAll(async () => {
    await Promise.all(roles.map((r) => r.stop()));
    await sim?.stop();
    await broker?.stop();
  }, 60_000);

  it('a task created on one replica is polled, read and listed on the other; another tenant gets -32602', async () => {
    const a = await connectV1(url(0), acme);
    const b = await connectV1(url(1), acme);
    const stranger = await connectV1(url(1), globex);
    try {
      const created = await a.request(
        { method: 'tools/call', params: { name: 'embed_batch', arguments: { texts: TEXTS }, task: {} } },
        CreateTaskResultSchema,
      );
      const { taskId } = created.task;
      const task = await waitFor('the task to complete on the other replica', async () => {
        const seen = await b.experimental.tasks.getTask(taskId);
        return seen.status === 'completed' ? seen : undefined;
      });
      expect(task.taskId).toBe(taskId);
      const result = (await b.experimental.tasks.getTaskResult(taskId, CallToolResultSchema)) as BatchResult;
      const embedded = (await b.callTool({ name: 'embed', arguments: { texts: TEXTS } })) as BatchResult;
      expectSameVectors(result.structuredContent?.vectors, embedded.structuredContent?.vectors as number[][]);
      expect((await b.experimental.tasks.listTasks()).tasks.map((t) => t.taskId)).toContain(taskId);

      // The output file as a resource link, read from the replica that did not create the task.
      const link = (result.content as { type: string; uri?: string; mimeType?: string }[]).find(
        (c) => c.type === 'resource_link',
      );
      expect(link).toMatchObject({
        uri: expect.stringMatching(/^mcp-cluster:\/\/files\//),
        mimeType: 'application/jsonl',
      });
      const uri = String(link?.uri);
      const read = await b.readResource({ uri });
      const rows = (read.contents[0] as { text: string }).text
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l));
      expect(rows).toHaveLength(TEXTS.length);
      const templates = (await a.listResourceTemplates()).resourceTemplates.map((t) => t.uriTemplate);
      expect(templates).toContain('mcp-cluster://files/{file_id}');
      // Another tenant's file, an unknown one and a malformed id read as not found.
      for (const missing of [
        uri,
        'mcp-cluster://files/file-nothing',
        'mcp-cluster://files/..%2F..%2Fetc',
        'mcp-cluster://files/%E0%A4%A',
      ]) {
        const reader = missing === uri ? stranger : b;
        expect(await codeOf(reader.readResource({ uri: missing }))).toBe(-32602);
      }

      expect(await codeOf(stranger.experimental.tasks.getTask(taskId))).toBe(-32602);
      expect(await codeOf(stranger.experimental.tasks.cancelTask(taskId))).toBe(-32602);
      expect(await codeOf(b.experimental.tasks.getTask(UNKNOWN_ID))).toBe(-32602);

      const modern = await runWithExtTasks([url(1), url(0)], acme, TEXTS);
      expectSameVectors(
        modern.result.structuredContent?.vectors,
        embedded.structuredContent?.vectors as number[][],
      );
    } finally {
      await Promise.all([a.close(), b.close(), stranger.close()]);
    }
  });
});
