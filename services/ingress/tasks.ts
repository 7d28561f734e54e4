import { setTimeout as sleep } from 'node:timers/promises';
import { ListTasksRequestV1Schema } from '@modelcontextprotocol/ext-tasks/core/v1';
import {
  CancelTaskRequestV2Schema,
  GetTaskRequestV2Schema,
  TASKS_EXTENSION_ID_V2,
} from '@modelcontextprotocol/ext-tasks/core/v2';
import {
  type CallToolRequest,
  CLIENT_CAPABILITIES_META_KEY,
  type Implementation,
  type JSONRPCRequest,
  MissingRequiredClientCapabilityError,
  ProtocolError,
  RELATED_TASK_META_KEY,
  type Result,
  Server,
  type ServerCapabilities,
  type ServerContext,
  type ServerOptions,
} from '@modelcontextprotocol/server';
import {
  ClusterError,
  type Logger,
  type ToolDefinition,
  toClusterError,
  toJsonRpcError,
  toToolErrorResult,
} from '../core/index.js';
import type { BatchJobs, JobItem, JobOwner, JobView } from '../jobs/types.js';
import { type CallerIdentity, identityOf } from './auth/index.js';
import { fileLink } from './file-resources.js';
import { requestScope, TIMEOUT_META_KEY } from './mcp-server.js';
import { describeTool, inputSchemaOf, OUTPUT_SCHEMA, WAIT_ROWS } from './task-tool.js';
import {
  type Era,
  errorRow,
  FINAL,
  finalText,
  finishedAtOf,
  isErrorJob,
  iso,
  lastUpdatedOf,
  pendingText,
  readRows,
  statusMessageOf,
  summaryOf,
  taskStatusOf,
  VECTORS_MAX,
  vectorRow,
} from './task-views.js';
import { ToolValidator } from './tool-validator.js';

/**
 * `embed_batch`: a batch embedding job (services/jobs) behind one MCP tool, served as an MCP Task
 * in both task shapes the SDK's eras carry, with the task id being the job id. Every answer is read
 * from the job store, so any replica answers for any task and nothing lives in this process.
 *
 * - 2025-11-25 (`basic/utilities/tasks`): `tools/call` with `params.task` answers
 *   `CreateTaskResult {task}`; `tasks/get`, `tasks/result` (blocks until the job is final),
 *   `tasks/list` (the caller's tenant's jobs) and `tasks/cancel`; `capabilities.tasks` advertised
 *   and `execution.taskSupport: "optional"` on the tool.
 * - 2026-07-28 `io.modelcontextprotocol/tasks` extension: a `tools/call` whose request declares
 *   the extension answers `resultType: "task"` once the job record is stored (so `tasks/get`
 *   resolves on every replica); `tasks/get` inlines the result of a final job, `tasks/update`
 *   acknowledges (a batch job never asks for input), `tasks/cancel` acknowledges; a request that
 *   does not declare the extension gets -32021. `Mcp-Name` must carry the task id (the SDK checks).
 * - Without a task: a job of at most {@link WAIT_ROWS} inline texts is waited for, up to the
 *   call's deadline, and answered with its vectors; any other job (a file, more texts, or one that
 *   outlives the deadline) is answered at once with its job id and how to follow it.
 *
 * Job states map onto task states as each revision defines them: validating, in_progress and
 * finalizing are `working`; cancelling and cancelled are `cancelled`; completed is `completed`;
 * a job refused or expired (a tool-level failure, answered as an `isError` result) is `failed`
 * on 2025-11-25, where failed covers `isError` results, and `completed` with that result on
 * 2026-07-28, where failed is kept for JSON-RPC errors. An id that is not a job of the caller's
 * tenant (absent, deleted, another tenant's, or on a pool whose embed tool the caller's scopes
 * hide) is -32602 on every method.
 *
 * The SDK v2 has no task runtime: the methods are registered on its low-level `Server` with the
 * `@modelcontextprotocol/ext-tasks` schemas, and `embed_batch` answers skip the SDK's
 * `tools/call` result check, which knows neither `{task}` nor `resultType: "task"`.
 */
export interface McpTasks {
  /**
   * `embed_batch` as a catalog entry (the scopes of the default pool's embed tool), for the
   * front door's scope challenges; undefined when the cluster has no embed tool (then no task
   * method is registered either and `embed_batch` is not listed).
   */
  readonly tool: ToolDefinition | undefined;
  /** A `Server` for one request with the task methods registered and the task capabilities advertised. */
  createServer(info: Implementation, options: ServerOptions): Server;
  /** The `tools/list` entries a caller holding `scopes` sees (none or `embed_batch`). */
  list(scopes: readonly string[]): Record<string, unknown>[];
  /** Whether `tools/call` of `name` is served here. */
  handles(name: string): boolean;
  /** Serves a `tools/call` of `embed_batch`: a task, a complete result, or an `isError` result. */
  call(request: CallToolRequest, ctx: ServerContext): Promise<Result>;
}

/** What the task layer needs from the replica. */
export interface McpTasksOptions {
  jobs: BatchJobs;
  /** The catalog: the embed tools are found in it by template. */
  tools: readonly ToolDefinition[];
  /** The pool a job that names none runs on (`batch.pool`); default the first pool with an embed tool. */
  defaultPool?: string;
  /** How long a finished job is kept (`batch.retentionHours`), reported as the task's ttl. */
  retentionMs?: number;
  /** The largest deadline a caller may ask for (`ingress.maxDeadlineMs`). */
  maxDeadlineMs: number;
  /** Whether a caller holding `scopes` may call `tool` (default: everyone may). */
  allows?: (tool: ToolDefinition, scopes: readonly string[]) => boolean;
  log: Logger;
}

/** The tool's name. */
const EMBED_BATCH = 'embed_batch';
/** Suggested polling interval of a job small enough to carry its vectors, and of a larger one. */
const POLL_SMALL_MS = 250;
const POLL_LARGE_MS = 2_000;
const DEFAULT_RETENTION_MS = 7 * 24 * 3600_000;
/** `_meta` key of a 2025-11-25 CreateTaskResult: text a host may hand the model at once. */
const IMMEDIATE_RESPONSE_META_KEY = 'io.modelcontextprotocol/model-immediate-response';

const CAPABILITIES: ServerCapabilities = {
  tasks: { list: {}, cancel: {}, requests: { tools: { call: {} } } },
  extensions: { [TASKS_EXTENSION_ID_V2]: {} },
};
const MISSING_EXTENSION = () =>
  new MissingRequiredClientCapabilityError(
    { requiredCapabilities: { extensions: { [TASKS_EXTENSION_ID_V2]: {} } } },
    `tasks/* requests need the ${TASKS_EXTENSION_ID_V2} extension declared in the request's client capabilities`,
  );

/** A job's input arguments, as validated. */
interface BatchArguments {
  texts?: string[];
  items?: JobItem[];
  file_id?: string;
  pool?: string;
}

export function createMcpTasks(options: McpTasksOptions): McpTasks {
  const { jobs, tools, log } = options;
  const allows = options.allows ?? (() => true);
  const retentionMs = options.retentionMs ?? DEFAULT_RETENTION_MS;
  const embedTools = tools.filter((t) => t.template === 'embed');
  const embedToolOf = (pool: string) => embedTools.find((t) => t.pool === pool);
  const embedPools = [...new Set(embedTools.map((t) => t.pool))];
  const defaultPool =
    options.defaultPool !== undefined && embedToolOf(options.defaultPool)
      ? options.defaultPool
      : embedTools[0]?.pool;
  const defaultTool = defaultPool === undefined ? undefined : embedToolOf(defaultPool);
  const tool: ToolDefinition | undefined = defaultTool && {
    name: EMBED_BATCH,
    description: describeTool(embedPools),
    pool: defaultTool.pool,
    template: EMBED_BATCH,
    inputSchema: inputSchemaOf(embedPools),
    outputSchema: OUTPUT_SCHEMA,
    deadlineMs: defaultTool.deadlineMs,
    scopes: defaultTool.scopes,
  };
  const validator = tool ? new ToolValidator([tool]) : undefined;
  const entry = tool && {
    name: tool.name,
    description: tool.description,
    inputSchema: tool.inputSchema,
    outputSchema: tool.outputSchema,
    // 2025-11-25 tool-level negotiation; the SDK drops it from 2026-07-28 listings.
    execution: { taskSupport: 'optional' },
  };

  const ownerOf = (identity: CallerIdentity): JobOwner => ({
    tenant: identity.tenant,
    principal: identity.principal,
  });
  /** The job, when it is the caller's: of their tenant, on a pool whose embed tool they may call. */
  const jobFor = async (identity: CallerIdentity, taskId: string): Promise<JobView> => {
    const job = await jobs.get(ownerOf(identity), taskId);
    const runsOn = tools.find((t) => t.name === job.tool) ?? embedToolOf(job.pool);
    if (runsOn && !allows(runsOn, identity.scopes))
      throw new ClusterError(
        'UNKNOWN_JOB',
        `no batch job ${taskId.slice(0, 80)} for tenant ${identity.tenant}`,
      );
    return job;
  };

  // --- Task and result shapes ------------------------------------------------------------------

  const taskOf = (job: JobView, era: Era) => {
    const finishedAt = finishedAtOf(job);
    const ttl = retentionMs + Math.max(0, (finishedAt ?? Date.now() / 1000) - job.createdAt) * 1000;
    const poll = job.counts.total <= VECTORS_MAX ? POLL_SMALL_MS : POLL_LARGE_MS;
    const common = {
      taskId: job.id,
      status: taskStatusOf(job, era),
      statusMessage: statusMessageOf(job),
      createdAt: iso(job.createdAt),
      lastUpdatedAt: iso(lastUpdatedOf(job)),
    };
    return era === 'legacy'
      ? { ...common, ttl: Math.round(ttl), ...(finishedAt === undefined ? { pollInterval: poll } : {}) }
      : { ...common, ttlMs: Math.round(ttl), ...(finishedAt === undefined ? { pollIntervalMs: poll } : {}) };
  };

  /** The `CallToolResult` of a final job: counts, files, and the vectors of a small one. */
  const resultOf = async (owner: JobOwner, job: JobView): Promise<Record<string, unknown>> => {
    const structured: Record<string, unknown> = summaryOf(job);
    if (job.outputFileId && job.counts.completed > 0 && job.counts.total <= VECTORS_MAX) {
      const rows = await readRows(jobs, owner, job.outputFileId);
      const ids: string[] = [];
      const vectors: number[][] = [];
      for (const row of rows) {
        const read = vectorRow(row);
        if (!read) continue;
        ids.push(read.id);
        vectors.push(read.vector);
      }
      structured.dimensions = vectors[0]?.length ?? 0;
      structured.ids = ids;
      structured.vectors = vectors;
    }
    if (job.errorFileId && job.counts.failed > 0 && job.counts.total <= VECTORS_MAX) {
      const rows = await readRows(jobs, owner, job.errorFileId);
      structured.failures = rows.map(errorRow).filter((f) => f !== undefined);
    }
    const isError = isErrorJob(job);
    // The job's files as resource links: any replica reads them with resources/read.
    const links = [
      ...(job.outputFileId && job.counts.completed > 0
        ? [
            fileLink(
              job.outputFileId,
              `${job.id}_output.jsonl`,
              'The output rows (one embedding per input row)',
            ),
          ]
        : []),
      ...(job.errorFileId && job.counts.failed > 0
        ? [fileLink(job.errorFileId, `${job.id}_errors.jsonl`, 'The rows that failed, with their errors')]
        : []),
    ];
    return {
      content: [{ type: 'text', text: finalText(job, isError) }, ...links],
      structuredContent: structured,
      ...(isError ? { isError: true } : {}),
    };
  };

  /** The answer to a call that did not wait for its job: the job as it stands and how to follow it. */
  const pendingResult = (job: JobView): Record<string, unknown> => ({
    content: [{ type: 'text', text: pendingText(job) }],
    structuredContent: summaryOf(job),
  });

  // --- tools/call ------------------------------------------------------------------------------

  const call = async (request: CallToolRequest, ctx: ServerContext): Promise<Result> => {
    const identity = identityOf(ctx.http?.authInfo);
    const era: Era = ctx.mcpReq.envelope !== undefined ? 'modern' : 'legacy';
    if (!tool || !validator || !allows(tool, identity.scopes)) {
      const error = new ClusterError('UNKNOWN_TOOL', `unknown tool "${request.params.name}"`);
      throw protocolErrorOf(error);
    }
    const args = { ...(request.params.arguments ?? {}) } as Record<string, unknown>;
    const problem = validator.check(EMBED_BATCH, args) ?? exactlyOneInput(args);
    if (problem) return toToolErrorResult(new ClusterError('INVALID_ARGUMENTS', problem)) as Result;
    const input = args as BatchArguments;
    const pool = input.pool ?? (defaultPool as string);
    const poolTool = embedToolOf(pool);
    if (poolTool && !allows(poolTool, identity.scopes)) {
      const error = new ClusterError('INVALID_ARGUMENTS', `pool "${pool}" serves no embed tool you may call`);
      return toToolErrorResult(error) as Result;
    }
    const meta = (ctx.mcpReq._meta ?? {}) as Record<string, unknown>;
    const deadline = deadlineOf(meta, poolTool?.deadlineMs ?? tool.deadlineMs, options.maxDeadlineMs);
    if (typeof deadline === 'string')
      return toToolErrorResult(new ClusterError('INVALID_ARGUMENTS', deadline)) as Result;

    const owner = ownerOf(identity);
    let job: JobView;
    try {
      // Resolves once the job record is stored: from here on tasks/get answers on every replica.
      job = await jobs.submit(owner, jobInputOf(input), { pool });
    } catch (err) {
      const error = toClusterError(err);
      if (error.code === 'UNKNOWN_JOB')
        return toToolErrorResult(
          new ClusterError('INVALID_ARGUMENTS', `file_id: ${error.message}`),
        ) as Result;
      if (error.code !== 'INVALID_ARGUMENTS') log.warn('embed_batch submit failed', { err });
      return toToolErrorResult(error) as Result;
    }
    log.info('embed_batch job', {
      job: job.id,
      tenant: owner.tenant,
      principal: owner.principal,
      rows: job.counts.total,
      era,
      as: asTask(request, ctx, era) ? 'task' : 'call',
    });

    if (asTask(request, ctx, era)) {
      const task = taskOf(job, era);
      if (era === 'modern') return { resultType: 'task', ...task };
      return { task, _meta: { [IMMEDIATE_RESPONSE_META_KEY]: pendingText(job) } };
    }
    const inline = input.file_id === undefined;
    if (!inline || job.counts.total > WAIT_ROWS) return pendingResult(job) as Result;
    const scope = requestScope.getStore();
    const signal = scope ? AbortSignal.any([scope.signal, ctx.mcpReq.signal]) : ctx.mcpReq.signal;
    const settled = await waitFor(owner, job.id, Date.now() + deadline, signal);
    return (FINAL.has(settled.status) ? await resultOf(owner, settled) : pendingResult(settled)) as Result;
  };

  /** Polls the job until it is final, `until` passes or `signal` aborts; returns it as last read. */
  const waitFor = async (owner: JobOwner, id: string, until: number, signal: AbortSignal) => {
    let delay = 20;
    for (;;) {
      const job = await jobs.get(owner, id);
      const left = until - Date.now();
      if (FINAL.has(job.status) || left <= 0 || signal.aborted) return job;
      try {
        await sleep(Math.min(delay, left), undefined, { signal });
      } catch {
        return job;
      }
      delay = Math.min(delay * 2, 500);
    }
  };

  // --- tasks/* ---------------------------------------------------------------------------------

  /** Runs a task method: the era and identity of the request, ClusterErrors as JSON-RPC errors. */
  const method =
    <P>(body: (params: P, era: Era, identity: CallerIdentity, ctx: ServerContext) => Promise<Result>) =>
    async (params: P, ctx: ServerContext): Promise<Result> => {
      const era: Era = ctx.mcpReq.envelope !== undefined ? 'modern' : 'legacy';
      if (era === 'modern' && !declaresExtension(ctx)) throw MISSING_EXTENSION();
      try {
        return await body(params, era, identityOf(ctx.http?.authInfo), ctx);
      } catch (err) {
        if (err instanceof ProtocolError) throw err;
        const error = toClusterError(err);
        if (error.code === 'INTERNAL') log.error('task method failed', { err });
        throw protocolErrorOf(error);
      }
    };

  const getTask = method<{ taskId: string }>(async ({ taskId }, era, identity) => {
    const job = await jobFor(identity, taskId);
    const task = taskOf(job, era);
    if (era === 'legacy' || !FINAL.has(job.status) || task.status === 'cancelled') return task;
    return { ...task, result: { resultType: 'complete', ...(await resultOf(ownerOf(identity), job)) } };
  });

  const taskResult = method<{ taskId: string }>(async ({ taskId }, _era, identity, ctx) => {
    await jobFor(identity, taskId);
    const scope = requestScope.getStore();
    const signal = scope ? AbortSignal.any([scope.signal, ctx.mcpReq.signal]) : ctx.mcpReq.signal;
    // Blocks until the job is final, as the revision asks; the client may poll tasks/get meanwhile.
    const job = await waitFor(ownerOf(identity), taskId, Number.POSITIVE_INFINITY, signal);
    if (!FINAL.has(job.status)) throw new ClusterError('CANCELLED', 'the request ended before the job did');
    const result = await resultOf(ownerOf(identity), job);
    return { ...result, _meta: { [RELATED_TASK_META_KEY]: { taskId } } };
  });

  const listTasks = method<{ cursor?: string } | undefined>(async (params, _era, identity) => {
    const limit = 50;
    const page = await jobs.list(ownerOf(identity), {
      limit,
      ...(params?.cursor !== undefined ? { after: params.cursor } : {}),
    });
    const visible = page.filter((job) => {
      const runsOn = tools.find((t) => t.name === job.tool) ?? embedToolOf(job.pool);
      return !runsOn || allows(runsOn, identity.scopes);
    });
    const last = page.at(-1);
    return {
      tasks: visible.map((job) => taskOf(job, 'legacy')),
      ...(page.length === limit && last ? { nextCursor: last.id } : {}),
    };
  });

  const cancelTask = method<{ taskId: string }>(async ({ taskId }, era, identity) => {
    const job = await jobFor(identity, taskId);
    if (FINAL.has(job.status)) {
      // 2025-11-25: a final task cannot be cancelled; 2026-07-28: cancelling is a request, acknowledged.
      if (era === 'modern') return {};
      throw new ClusterError(
        'INVALID_ARGUMENTS',
        `task ${taskId} is already ${taskStatusOf(job, era)}; only a working task can be cancelled`,
      );
    }
    const cancelled = await jobs.cancel(ownerOf(identity), taskId);
    log.info('embed_batch job cancelled', { job: taskId, tenant: identity.tenant, era });
    return era === 'modern' ? {} : taskOf(cancelled, era);
  });

  const updateTask = method<{ taskId: string }>(async ({ taskId }, _era, identity) => {
    // A batch job never asks for input: every response is for a key that is not outstanding,
    // which the revision says to ignore; the task must still be the caller's.
    await jobFor(identity, taskId);
    return {};
  });

  const createServer = (info: Implementation, serverOptions: ServerOptions): Server => {
    if (!tool) return new Server(info, serverOptions);
    const server = new TaskServer(info, {
      ...serverOptions,
      capabilities: { ...serverOptions.capabilities, ...CAPABILITIES },
    });
    const taskId = GetTaskRequestV2Schema.shape.params;
    server.setRequestHandler('tasks/get', { params: taskId }, getTask);
    server.setRequestHandler('tasks/result', { params: taskId }, taskResult);
    server.setRequestHandler('tasks/list', { params: ListTasksRequestV1Schema.shape.params }, listTasks);
    server.setRequestHandler('tasks/cancel', { params: CancelTaskRequestV2Schema.shape.params }, cancelTask);
    // The SDK lifts `inputResponses` out of every request's params (its multi-round-trip
    // handling), so only the task id is left to check here.
    server.setRequestHandler('tasks/update', { params: taskId }, updateTask);
    return server;
  };

  return {
    tool,
    createServer,
    list: (scopes) => (entry && tool && allows(tool, scopes) ? [entry] : []),
    handles: (name) => name === EMBED_BATCH && tool !== undefined,
    call,
  };
}

/**
 * The SDK's server, except that `tools/call` answers of `embed_batch` skip the SDK's result
 * check: it validates every `tools/call` result as a `CallToolResult`, which neither task shape
 * is (2025-11-25 `{task}` fails it, a 2026-07-28 `resultType: "task"` loses its fields). Every
 * other tool's answers are checked as before; the request itself was already parsed with the
 * era's schema by the handler the SDK stored.
 */
class TaskServer extends Server {
  protected override _wrapHandler(
    method: string,
    handler: (request: JSONRPCRequest, ctx: ServerContext) => Promise<Result>,
  ): (request: JSONRPCRequest, ctx: ServerContext) => Promise<Result> {
    const wrapped = super._wrapHandler(method, handler);
    if (method !== 'tools/call') return wrapped;
    return (request, ctx) =>
      request.params?.name === EMBED_BATCH ? handler(request, ctx) : wrapped(request, ctx);
  }
}

// --- Pure helpers --------------------------------------------------------------------------------

function asTask(request: CallToolRequest, ctx: ServerContext, era: Era): boolean {
  if (era === 'modern') return declaresExtension(ctx);
  return (request.params as { task?: unknown }).task !== undefined;
}

function declaresExtension(ctx: ServerContext): boolean {
  // The SDK types the envelope as an opaque object; its keys are the reserved `_meta` ones.
  const envelope = ctx.mcpReq.envelope as Record<string, unknown> | undefined;
  const declared = envelope?.[CLIENT_CAPABILITIES_META_KEY] as
    | { extensions?: Record<string, unknown> }
    | undefined;
  return declared?.extensions?.[TASKS_EXTENSION_ID_V2] !== undefined;
}

function protocolErrorOf(error: ClusterError): ProtocolError {
  const rpc = toJsonRpcError(error);
  return new ProtocolError(rpc.code, rpc.message, rpc.data);
}

function exactlyOneInput(args: Record<string, unknown>): string | undefined {
  const given = ['texts', 'items', 'file_id'].filter((k) => args[k] !== undefined);
  if (given.length === 1) return undefined;
  return given.length === 0
    ? 'invalid arguments for embed_batch: give one of texts, items or file_id'
    : `invalid arguments for embed_batch: give only one of texts, items or file_id, got ${given.join(' and ')}`;
}

function jobInputOf(args: BatchArguments) {
  if (args.file_id !== undefined) return { fileId: args.file_id };
  if (args.items !== undefined) return { items: args.items };
  // Inline texts get their index as id: ids[i] of the result is String(i).
  return { items: (args.texts ?? []).map((text, i) => ({ id: String(i), text })) };
}

function deadlineOf(meta: Record<string, unknown>, toolDefaultMs: number, maxMs: number): number | string {
  const asked = meta[TIMEOUT_META_KEY];
  if (asked === undefined) return Math.min(toolDefaultMs, maxMs);
  if (typeof asked !== 'number' || !Number.isFinite(asked) || asked <= 0)
    return `_meta["${TIMEOUT_META_KEY}"] must be a positive number of milliseconds, got ${JSON.stringify(asked)}`;
  if (asked > maxMs)
    return `_meta["${TIMEOUT_META_KEY}"] is ${asked} ms, above this cluster's limit of ${maxMs} ms`;
  return asked;
}
