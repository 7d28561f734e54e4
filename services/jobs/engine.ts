import { randomBytes } from 'node:crypto';
import { Ajv } from 'ajv';
import {
  type CallQueue,
  ClusterError,
  createLogger,
  encodeArguments,
  type JobStore,
  type Logger,
  type ResolvedConfig,
  type ToolCall,
} from '../core/index.js';
import { chunkCallId, finishIfSettled, JOB_ADDRESS_PREFIX } from './chunks.js';
import { checkItems, type InputLimits, type ParsedInput, parseJsonl } from './input.js';
import { errorRows, outputRows } from './output.js';
import {
  changeJob,
  chunkInput,
  decodeRecord,
  emptyBitmap,
  encodeRecord,
  errorFileId,
  FINAL,
  hasBit,
  type JobRecord,
  jobKey,
  nowSeconds,
  outputFileId,
  readJob,
  viewOf,
} from './record.js';
import type { BatchJobs, FileView, JobInput, JobOwner, JobView, SubmitOptions } from './types.js';

/** What the engine needs: the job store and queue of the cluster's broker, and its configuration. */
export interface BatchJobsOptions {
  store: JobStore;
  queue: CallQueue;
  config: ResolvedConfig;
  log?: Logger;
  /** How often finished jobs past retention are deleted and overdue ones expired, in ms (default 60 000). */
  sweepIntervalMs?: number;
}

/** Chunk blobs written, and chunk calls enqueued, at once during a submit. */
const PARALLEL_WRITES = 32;
const FILE_PREFIX = 'file-';
const JOB_PREFIX = 'batch_';

interface FileRecord extends FileView {
  owner: JobOwner;
  lines: number;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/**
 * The batch engine over the broker's job store (see types.ts for the contract). Every replica
 * runs one; they share nothing but the store and the queue, so any replica answers for any job.
 * A submit validates the whole input, stores it in chunks, creates the record and enqueues one
 * low-priority call per chunk (`replyTo` = `job:<id>`: workers write results to the store, see
 * `batchJobDelivery`). A sweep expires jobs past their window and deletes what is past retention.
 */
export function createBatchJobs(options: BatchJobsOptions): BatchJobs & { close(): Promise<void> } {
  const { store, queue, config } = options;
  const log = options.log ?? createLogger('batch');
  const settings = config.batch;
  const retentionSeconds = settings.retentionHours * 3600;

  // The embed tool of each pool, and a check of one text against that tool's own input schema.
  const ajv = new Ajv({ allErrors: false, strict: false });
  const toolOf = (pool: string) => {
    const tool = config.tools.find((t) => t.pool === pool && t.template === 'embed');
    if (!tool) {
      const pools = [...new Set(config.tools.filter((t) => t.template === 'embed').map((t) => t.pool))];
      throw new ClusterError(
        'INVALID_ARGUMENTS',
        `pool "${pool}" serves no embed tool; batch jobs run on ${pools.length > 0 ? pools.join(', ') : 'no pool of this cluster'}`,
      );
    }
    return tool;
  };
  const limitsFor = (pool: string): InputLimits => {
    const tool = toolOf(pool);
    const validate = ajv.compile(tool.inputSchema);
    return {
      maxLines: settings.maxLines,
      maxBytes: settings.maxInputBytes,
      checkText: (text) =>
        validate({ texts: [text] })
          ? undefined
          : `the text does not fit tool ${tool.name}: ${ajv.errorsText(validate.errors, { dataVar: 'input' })}`,
    };
  };

  const own = (record: { owner: JobOwner } | undefined, owner: JobOwner, id: string, what: string) => {
    if (!record || record.owner.tenant !== owner.tenant) {
      throw new ClusterError('UNKNOWN_JOB', `no ${what} ${id.slice(0, 80)} for tenant ${owner.tenant}`);
    }
  };
  const jobOf = async (owner: JobOwner, id: string): Promise<JobRecord> => {
    const found =
      typeof id === 'string' && /^batch_[A-Za-z0-9_-]{22}$/.test(id) ? await readJob(store, id) : undefined;
    own(found?.record, owner, String(id), 'batch job');
    return (found as { record: JobRecord }).record;
  };
  const fileOf = async (owner: JobOwner, id: string): Promise<FileRecord> => {
    const found = /^file-[A-Za-z0-9_-]{22}$/.test(id) ? await store.get(`file.${id}`) : undefined;
    const record = found ? (JSON.parse(decoder.decode(found.value)) as FileRecord) : undefined;
    own(record, owner, id, 'file');
    return record as FileRecord;
  };

  const submit = async (
    owner: JobOwner,
    input: JobInput,
    submitOptions: SubmitOptions = {},
  ): Promise<JobView> => {
    const pool = submitOptions.pool ?? settings.pool;
    const tool = toolOf(pool);
    const limits = limitsFor(pool);
    let parsed: ParsedInput;
    let inputFileId: string | undefined;
    if ('items' in input) parsed = checkItems(input.items, limits);
    else if ('jsonl' in input) parsed = parseJsonl(input.jsonl, limits);
    else {
      const file = await fileOf(owner, input.fileId);
      const bytes = await store.getBlob(`${file.id}.data`);
      if (!bytes) throw new ClusterError('UNKNOWN_JOB', `file ${file.id} has no content any more`);
      parsed = parseJsonl(bytes, limits);
      inputFileId = file.id;
    }
    const windowMs = submitOptions.completionWindowMs ?? settings.completionWindowMs;
    // A chunk's deadline is the job's window: the broker keeps a queued call only as long as the
    // configured window allows (a NATS stream's max_age), so a longer one could lose chunks.
    if (windowMs > settings.completionWindowMs) {
      throw new ClusterError(
        'INVALID_ARGUMENTS',
        `completion_window may be at most ${settings.completionWindowMs / 1000}s here (batch.completionWindow), got ${windowMs / 1000}s`,
      );
    }
    const metadata = checkMetadata(submitOptions.metadata);
    const id = `${JOB_PREFIX}${randomBytes(16).toString('base64url').slice(0, 22)}`;
    const chunkSize = settings.chunkSize;
    const chunkCount = Math.ceil(parsed.items.length / chunkSize);
    const created = nowSeconds();
    const record: JobRecord = {
      id,
      owner,
      status: 'validating',
      pool,
      tool: tool.name,
      model: tool.model,
      format: parsed.format,
      total: parsed.items.length,
      chunkSize,
      chunkCount,
      done: emptyBitmap(chunkCount),
      failed: emptyBitmap(chunkCount),
      completedRows: 0,
      failedRows: 0,
      times: { created, validating: created },
      createdMs: Date.now(),
      expiresAt: created + Math.ceil(windowMs / 1000),
      ...(inputFileId ? { inputFileId } : {}),
      ...(metadata ? { metadata } : {}),
    };
    await store.create(jobKey(id), encodeRecord(record));
    const chunkItems = (i: number) => parsed.items.slice(i * chunkSize, (i + 1) * chunkSize);
    try {
      await inParallel(chunkCount, PARALLEL_WRITES, (i) => {
        const items = chunkItems(i);
        return store.putBlob(
          chunkInput(id, i),
          encoder.encode(
            JSON.stringify({ ids: items.map((item) => item.id), texts: items.map((item) => item.text) }),
          ),
        );
      });
      const enqueuedUnixMs = Date.now();
      await inParallel(chunkCount, PARALLEL_WRITES, (i) => {
        const call: ToolCall = {
          callId: chunkCallId(id, i),
          tool: tool.name,
          pool,
          argumentsJson: encodeArguments({ texts: chunkItems(i).map((item) => item.text) }),
          tenant: owner.tenant,
          // Chunks of one job spread over backends; affinity buys an embedding nothing.
          sessionKey: '',
          priority: 'low',
          deadlineUnixMs: record.expiresAt * 1000,
          attempt: 0,
          replyTo: `${JOB_ADDRESS_PREFIX}${id}`,
          traceContext: {},
          enqueuedUnixMs,
          wantsProgress: false,
          principal: owner.principal,
          scopes: [],
        };
        return queue.enqueue(call);
      });
    } catch (err) {
      // Some chunks may be queued: the failed status makes the workers that take them drop them.
      await changeJob(store, id, (r) => ({
        ...r,
        status: 'failed',
        times: { ...r.times, failed: nowSeconds() },
        errors: [{ message: `the job could not be queued: ${(err as Error).message}` }],
      })).catch(() => undefined);
      throw err;
    }
    // Fast workers may have settled every chunk already: then the job completes right here.
    const started = await changeJob(store, id, (r) =>
      r.status === 'validating'
        ? finishIfSettled({ ...r, status: 'in_progress', times: { ...r.times, in_progress: nowSeconds() } })
        : undefined,
    );
    log.info('batch job submitted', {
      job: id,
      tenant: owner.tenant,
      principal: owner.principal,
      rows: record.total,
      chunks: chunkCount,
      pool,
    });
    return viewOf(started ?? record);
  };

  const cancel = async (owner: JobOwner, id: string): Promise<JobView> => {
    const record = await jobOf(owner, id);
    if (FINAL.has(record.status)) return viewOf(record);
    const cancelling = await changeJob(store, id, (r) =>
      FINAL.has(r.status) || r.status === 'cancelling'
        ? undefined
        : { ...r, status: 'cancelling', times: { ...r.times, cancelling: nowSeconds() } },
    );
    if (!cancelling) throw new ClusterError('UNKNOWN_JOB', `no batch job ${id} for tenant ${owner.tenant}`);
    // Queued chunks go now where this replica can reach them; the others are stopped by the
    // worker that takes them (the job's status says cancelling). Rows already done stay.
    await inParallel(cancelling.chunkCount, PARALLEL_WRITES, async (i) => {
      if (hasBit(cancelling.done, i) || hasBit(cancelling.failed, i)) return;
      await queue.cancel(chunkCallId(id, i), cancelling.pool).catch(() => false);
    });
    const after = await changeJob(store, id, (r) =>
      r.status === 'cancelling'
        ? { ...r, status: 'cancelled', times: { ...r.times, cancelled: nowSeconds() } }
        : undefined,
    );
    log.info('batch job cancelled', { job: id, tenant: owner.tenant, principal: owner.principal });
    return viewOf(after ?? cancelling);
  };

  const sweep = async () => {
    const now = nowSeconds();
    for (const key of await store.keys('job.')) {
      const found = await store.get(key);
      if (!found) continue;
      const record = decodeRecord(found.value);
      if (!FINAL.has(record.status) && record.expiresAt < now) {
        await changeJob(store, record.id, (r) =>
          FINAL.has(r.status)
            ? undefined
            : { ...finishIfSettled(r), status: 'expired', times: { ...r.times, expired: now } },
        );
        log.info('batch job expired', { job: record.id, tenant: record.owner.tenant });
        continue;
      }
      const finishedAt = Math.max(...Object.values(record.times).filter((t): t is number => t !== undefined));
      if (FINAL.has(record.status) && finishedAt + retentionSeconds < now) await deleteJob(record);
    }
    for (const key of await store.keys('file.')) {
      const found = await store.get(key);
      if (!found) continue;
      const file = JSON.parse(decoder.decode(found.value)) as FileRecord;
      if (file.createdAt + retentionSeconds < now) {
        await store.deleteBlob(`${file.id}.data`);
        await store.delete(key);
      }
    }
  };
  const deleteJob = async (record: JobRecord) => {
    for (const name of await store.blobNames(`${record.id}.`)) await store.deleteBlob(name);
    await store.delete(jobKey(record.id));
    log.info('batch job deleted after retention', { job: record.id, tenant: record.owner.tenant });
  };
  const sweeper = setInterval(() => {
    sweep().catch((err: unknown) => log.warn('batch sweep failed', { err }));
  }, options.sweepIntervalMs ?? 60_000);
  sweeper.unref();

  return {
    async uploadFile(owner, filename, bytes) {
      // Checked now, as a submit would, so a bad file is refused at upload with its line numbers.
      const parsed = parseJsonl(bytes, limitsFor(settings.pool));
      const id = `${FILE_PREFIX}${randomBytes(16).toString('base64url').slice(0, 22)}`;
      const file: FileRecord = {
        id,
        owner,
        bytes: bytes.byteLength,
        createdAt: nowSeconds(),
        filename: filename.slice(0, 255) || 'input.jsonl',
        purpose: 'batch',
        lines: parsed.items.length,
      };
      await store.putBlob(`${id}.data`, bytes);
      await store.create(`file.${id}`, encoder.encode(JSON.stringify(file)));
      return viewOfFile(file);
    },
    async getFile(owner, fileId) {
      const job = await virtualFileJob(owner, fileId);
      if (job) {
        return {
          id: fileId,
          bytes: 0,
          createdAt: job.times.created,
          filename: `${job.id}_${fileId.startsWith('file-out-') ? 'output' : 'errors'}.jsonl`,
          purpose: 'batch_output',
        };
      }
      return viewOfFile(await fileOf(owner, fileId));
    },
    async *fileContent(owner, fileId) {
      const job = await virtualFileJob(owner, fileId);
      if (job) {
        yield* fileId.startsWith('file-out-') ? outputRows(store, job) : errorRows(store, job);
        return;
      }
      const file = await fileOf(owner, fileId);
      const bytes = await store.getBlob(`${file.id}.data`);
      if (bytes) yield bytes;
    },
    submit,
    get: async (owner, id) => viewOf(await jobOf(owner, id)),
    async list(owner, listOptions = {}) {
      const limit = Math.max(1, Math.min(100, Math.floor(listOptions.limit ?? 20)));
      const records = (await allJobs()).filter((r) => r.owner.tenant === owner.tenant);
      records.sort(newestFirst);
      let from = 0;
      if (listOptions.after) {
        // A page after a job that is gone (or never was) is empty, not the first page again:
        // a client paging while jobs are deleted must not loop.
        const at = records.findIndex((r) => r.id === listOptions.after);
        if (at < 0) return [];
        from = at + 1;
      }
      return records.slice(from, from + limit).map(viewOf);
    },
    async overview(limit = 20) {
      const records = await allJobs();
      records.sort((a, b) => Number(FINAL.has(a.status)) - Number(FINAL.has(b.status)) || newestFirst(a, b));
      return records
        .slice(0, Math.max(1, Math.min(100, Math.floor(limit))))
        .map((r) => ({ ...viewOf(r), tenant: r.owner.tenant }));
    },
    cancel,
    async close() {
      clearInterval(sweeper);
    },
  };

  /** Every job record in the store, every tenant's (each read once). */
  async function allJobs(): Promise<JobRecord[]> {
    const records: JobRecord[] = [];
    for (const key of await store.keys('job.')) {
      const found = await store.get(key);
      if (found) records.push(decodeRecord(found.value));
    }
    return records;
  }

  /** The job behind an output or error file id, when `fileId` is one. */
  async function virtualFileJob(owner: JobOwner, fileId: string): Promise<JobRecord | undefined> {
    const m = /^file-(out|err)-([A-Za-z0-9_-]{22})$/.exec(fileId);
    if (!m) return undefined;
    const job = await jobOf(owner, `${JOB_PREFIX}${m[2]}`).catch(() => undefined);
    const shown = job && (m[1] === 'out' ? outputFileId(job.id) : errorFileId(job.id)) === fileId;
    if (!job || !shown) throw new ClusterError('UNKNOWN_JOB', `no file ${fileId} for tenant ${owner.tenant}`);
    return job;
  }
}

const createdOf = (r: JobRecord) => r.createdMs ?? r.times.created * 1000;
/** Orders job records newest first (ties by id, so pages are stable). */
const newestFirst = (a: JobRecord, b: JobRecord) => createdOf(b) - createdOf(a) || (a.id < b.id ? 1 : -1);

function viewOfFile(file: FileRecord): FileView {
  return {
    id: file.id,
    bytes: file.bytes,
    createdAt: file.createdAt,
    filename: file.filename,
    purpose: file.purpose,
  };
}

function checkMetadata(metadata: Record<string, string> | undefined): Record<string, string> | undefined {
  if (metadata === undefined) return undefined;
  const entries = Object.entries(metadata);
  if (entries.length > 16) throw new ClusterError('INVALID_ARGUMENTS', 'metadata holds at most 16 pairs');
  for (const [key, value] of entries) {
    if (typeof value !== 'string' || key.length > 64 || value.length > 512) {
      throw new ClusterError(
        'INVALID_ARGUMENTS',
        'metadata keys are at most 64 and values at most 512 characters, strings only',
      );
    }
  }
  return metadata;
}

/** Runs `work(0..count-1)`, at most `width` at a time; rejects with the first failure. */
async function inParallel(
  count: number,
  width: number,
  work: (i: number) => Promise<unknown>,
): Promise<void> {
  let next = 0;
  const lane = async () => {
    while (next < count) await work(next++);
  };
  await Promise.all(Array.from({ length: Math.min(width, count) }, lane));
}
