import { ClusterError, type JobStore } from '../core/index.js';
import type { JobFormat, JobOwner, JobStatus, JobView } from './types.js';

/**
 * A job as stored (JSON in the job store's record `job.<id>`). Which chunks are settled is a
 * pair of bitmaps in the record itself, changed by compare-and-set: setting a chunk's bit and
 * adding its rows to the counts is one write, so a chunk that a dying worker finished twice is
 * counted once, and the counts can never disagree with the bits.
 */
export interface JobRecord {
  id: string;
  owner: JobOwner;
  status: JobStatus;
  pool: string;
  tool: string;
  model: string;
  format: JobFormat;
  total: number;
  chunkSize: number;
  chunkCount: number;
  /** Base64 bitmaps over chunks: completed, failed. */
  done: string;
  failed: string;
  completedRows: number;
  failedRows: number;
  /** Unix seconds of each state reached. */
  times: Partial<Record<JobStatus, number>> & { created: number };
  /** Creation in milliseconds since the epoch: orders a tenant's list within one second. */
  createdMs?: number;
  expiresAt: number;
  inputFileId?: string;
  metadata?: Record<string, string>;
  errors?: { line?: number; message: string }[];
}

/** The record key of a job. */
export const jobKey = (id: string) => `job.${id}`;
/** Blob names of a job's chunk `i`: its input items, its output vectors, its error. */
export const chunkInput = (id: string, i: number) => `${id}.in.${i}`;
export const chunkOutput = (id: string, i: number) => `${id}.out.${i}`;
export const chunkError = (id: string, i: number) => `${id}.err.${i}`;

/** Rows in chunk `i`. */
export function rowsOf(record: Pick<JobRecord, 'total' | 'chunkSize'>, i: number): number {
  return Math.max(0, Math.min(record.chunkSize, record.total - i * record.chunkSize));
}

export function emptyBitmap(bits: number): string {
  return Buffer.alloc(Math.ceil(bits / 8)).toString('base64');
}

export function hasBit(bitmap: string, i: number): boolean {
  const bytes = Buffer.from(bitmap, 'base64');
  return ((bytes[i >> 3] ?? 0) & (1 << (i & 7))) !== 0;
}

export function withBit(bitmap: string, i: number): string {
  const bytes = Buffer.from(bitmap, 'base64');
  bytes[i >> 3] = (bytes[i >> 3] ?? 0) | (1 << (i & 7));
  return bytes.toString('base64');
}

/** Chunks settled (completed or failed). */
export function settledChunks(record: JobRecord): number {
  const done = Buffer.from(record.done, 'base64');
  const failed = Buffer.from(record.failed, 'base64');
  let n = 0;
  for (let i = 0; i < done.length; i++) n += popcount((done[i] ?? 0) | (failed[i] ?? 0));
  return n;
}

function popcount(byte: number): number {
  let n = 0;
  for (let b = byte; b; b &= b - 1) n++;
  return n;
}

/** Final states: nothing changes a job in one of these. */
export const FINAL: ReadonlySet<JobStatus> = new Set(['completed', 'failed', 'cancelled', 'expired']);
/** States in which no new chunk should start. */
export const STOPPING: ReadonlySet<JobStatus> = new Set(['cancelling', 'cancelled', 'expired', 'failed']);

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export function encodeRecord(record: JobRecord): Uint8Array {
  return encoder.encode(JSON.stringify(record));
}

export function decodeRecord(bytes: Uint8Array): JobRecord {
  return JSON.parse(decoder.decode(bytes)) as JobRecord;
}

/** A job's record and revision; undefined when there is none. */
export async function readJob(
  store: JobStore,
  id: string,
): Promise<{ record: JobRecord; revision: number } | undefined> {
  const found = await store.get(jobKey(id));
  return found ? { record: decodeRecord(found.value), revision: found.revision } : undefined;
}

/**
 * Changes a job by compare-and-set: `change` gets the current record and returns the new one, or
 * undefined to leave it as it is; retried while other writers win. Resolves with the record as
 * it is afterwards (undefined when the job is gone).
 */
export async function changeJob(
  store: JobStore,
  id: string,
  change: (record: JobRecord) => JobRecord | undefined,
): Promise<JobRecord | undefined> {
  for (let attempt = 0; ; attempt++) {
    const current = await readJob(store, id);
    if (!current) return undefined;
    const next = change(current.record);
    if (!next) return current.record;
    if ((await store.update(jobKey(id), encodeRecord(next), current.revision)) !== false) return next;
    if (attempt > 1000) throw new ClusterError('INTERNAL', `job ${id}: record contended beyond 1000 writes`);
    // Another writer won: re-read and apply again, after a short random pause under heavy contention.
    if (attempt > 3) await new Promise((resolve) => setTimeout(resolve, Math.random() * 20));
  }
}

/** Output and error file ids of a job (virtual files assembled on download). */
export const outputFileId = (jobId: string) => `file-out-${jobId.slice('batch_'.length)}`;
export const errorFileId = (jobId: string) => `file-err-${jobId.slice('batch_'.length)}`;

/** What callers see of a record. */
export function viewOf(record: JobRecord): JobView {
  const t = record.times;
  const view: JobView = {
    id: record.id,
    status: record.status,
    pool: record.pool,
    tool: record.tool,
    model: record.model,
    format: record.format,
    counts: { total: record.total, completed: record.completedRows, failed: record.failedRows },
    chunks: { total: record.chunkCount, settled: settledChunks(record) },
    createdAt: t.created,
    expiresAt: record.expiresAt,
  };
  const at: [keyof JobView, JobStatus][] = [
    ['inProgressAt', 'in_progress'],
    ['finalizingAt', 'finalizing'],
    ['completedAt', 'completed'],
    ['failedAt', 'failed'],
    ['cancellingAt', 'cancelling'],
    ['cancelledAt', 'cancelled'],
    ['expiredAt', 'expired'],
  ];
  for (const [field, status] of at) {
    const when = t[status];
    if (when !== undefined) (view as unknown as Record<string, unknown>)[field] = when;
  }
  if (record.inputFileId) view.inputFileId = record.inputFileId;
  if (record.completedRows > 0) view.outputFileId = outputFileId(record.id);
  if (record.failedRows > 0) view.errorFileId = errorFileId(record.id);
  if (record.errors) view.errors = record.errors;
  if (record.metadata) view.metadata = record.metadata;
  return view;
}

export const nowSeconds = () => Math.floor(Date.now() / 1000);
