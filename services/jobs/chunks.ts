import type { JobStore } from '../core/index.js';
import {
  changeJob,
  chunkError,
  chunkOutput,
  hasBit,
  type JobRecord,
  nowSeconds,
  readJob,
  rowsOf,
  settledChunks,
  withBit,
} from './record.js';

/** `ToolCall.replyTo` of a job's chunks: their results go to the job store, not to an ingress. */
export const JOB_ADDRESS_PREFIX = 'job:';

/** The call id of chunk `i` of job `jobId` (the queue de-duplicates by it). */
export const chunkCallId = (jobId: string, i: number) => `${jobId}.${i}`;

/** The job and chunk of a chunk's call id; undefined for any other id. */
export function chunkOf(callId: string): { jobId: string; index: number } | undefined {
  const dot = callId.lastIndexOf('.');
  if (dot <= 0) return undefined;
  const index = Number(callId.slice(dot + 1));
  if (!Number.isInteger(index) || index < 0) return undefined;
  return { jobId: callId.slice(0, dot), index };
}

/**
 * Records chunk `index` as completed with `vectors` (one per row, in row order): the vectors go
 * into a blob as float32 (written again, byte for byte the same, when a chunk runs twice), then
 * the record's bit and counts change in one compare-and-set, which counts the chunk only once.
 * The last chunk to settle completes the job (through `finalizing`). Rejects with the store's
 * error (QUEUE_UNAVAILABLE) when it cannot write: the worker then hands the chunk back.
 */
export async function completeChunk(
  store: JobStore,
  jobId: string,
  index: number,
  vectors: number[][],
): Promise<void> {
  const found = await readJob(store, jobId);
  if (!found) return; // deleted (retention) while the chunk ran: nothing to record
  const rows = rowsOf(found.record, index);
  if (vectors.length !== rows) {
    throw new Error(
      `chunk ${index} of ${jobId} has ${rows} rows but the worker returned ${vectors.length} vectors`,
    );
  }
  const dimensions = vectors[0]?.length ?? 0;
  const floats = new Float32Array(rows * dimensions);
  vectors.forEach((vector, row) => {
    if (vector.length !== dimensions)
      throw new Error(`chunk ${index} of ${jobId}: vectors of unequal length`);
    floats.set(vector, row * dimensions);
  });
  await store.putBlob(chunkOutput(jobId, index), new Uint8Array(floats.buffer));
  await settle(store, jobId, index, 'done', rows);
}

/** Records chunk `index` as failed with `error` for every row of it; see {@link completeChunk}. */
export async function failChunk(
  store: JobStore,
  jobId: string,
  index: number,
  error: { code: string; message: string },
): Promise<void> {
  const found = await readJob(store, jobId);
  if (!found) return;
  await store.putBlob(chunkError(jobId, index), new TextEncoder().encode(JSON.stringify(error)));
  await settle(store, jobId, index, 'failed', rowsOf(found.record, index));
}

async function settle(
  store: JobStore,
  jobId: string,
  index: number,
  as: 'done' | 'failed',
  rows: number,
): Promise<void> {
  await changeJob(store, jobId, (record) => {
    // Settled before (a chunk that ran twice): the first outcome stands.
    if (hasBit(record.done, index) || hasBit(record.failed, index)) return undefined;
    const next: JobRecord =
      as === 'done'
        ? { ...record, done: withBit(record.done, index), completedRows: record.completedRows + rows }
        : { ...record, failed: withBit(record.failed, index), failedRows: record.failedRows + rows };
    return finishIfSettled(next);
  });
}

/** Moves a job whose every chunk is settled to its final state. */
export function finishIfSettled(record: JobRecord): JobRecord {
  if (settledChunks(record) < record.chunkCount) return record;
  const now = nowSeconds();
  if (record.status === 'in_progress' || record.status === 'finalizing') {
    // Rows are assembled into JSONL when read, so finalizing ends at once.
    return { ...record, status: 'completed', times: { ...record.times, finalizing: now, completed: now } };
  }
  if (record.status === 'cancelling')
    return { ...record, status: 'cancelled', times: { ...record.times, cancelled: now } };
  return record;
}
