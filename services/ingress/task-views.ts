import type { BatchJobs, JobOwner, JobStatus, JobView } from '../jobs/types.js';

// How a batch job reads as an MCP task: its status, messages, summary and result rows.

/** The protocol era a task is served in: 2025-11-25 (`legacy`) or the 2026-07-28 extension (`modern`). */
export type Era = 'legacy' | 'modern';
export type TaskStatus = 'working' | 'completed' | 'failed' | 'cancelled';

/** Jobs of at most this many rows carry their vectors in the result; larger ones name the output file. */
export const VECTORS_MAX = 1_000;

export const FINAL = new Set<JobStatus>(['completed', 'failed', 'cancelled', 'expired']);

export function taskStatusOf(job: JobView, era: Era): TaskStatus {
  switch (job.status) {
    case 'completed':
      return era === 'legacy' && isErrorJob(job) ? 'failed' : 'completed';
    case 'failed':
    case 'expired':
      return era === 'legacy' ? 'failed' : 'completed';
    case 'cancelling':
    case 'cancelled':
      return 'cancelled';
    default:
      return 'working';
  }
}

/** Whether the job's result is a tool-level failure: refused, expired, cancelled, or no row embedded. */
export function isErrorJob(job: JobView): boolean {
  if (job.status !== 'completed') return FINAL.has(job.status) || job.status === 'cancelling';
  return job.status === 'completed' && job.counts.completed === 0 && job.counts.failed > 0;
}

export function finishedAtOf(job: JobView): number | undefined {
  const at = [job.completedAt, job.failedAt, job.cancelledAt, job.expiredAt].filter(
    (t): t is number => t !== undefined,
  );
  return at.length > 0 ? Math.max(...at) : undefined;
}

export function lastUpdatedOf(job: JobView): number {
  return Math.max(
    ...[
      job.createdAt,
      job.inProgressAt,
      job.finalizingAt,
      job.completedAt,
      job.failedAt,
      job.cancellingAt,
      job.cancelledAt,
      job.expiredAt,
    ].filter((t): t is number => t !== undefined),
  );
}

export function iso(unixSeconds: number): string {
  return new Date(unixSeconds * 1000).toISOString();
}

export function count(n: number): string {
  return n.toLocaleString('en-US');
}

export function statusMessageOf(job: JobView): string {
  const { total, completed, failed } = job.counts;
  const progress = `${count(completed)} of ${count(total)} texts embedded${failed > 0 ? `, ${count(failed)} failed` : ''}`;
  switch (job.status) {
    case 'failed':
      return `the input was refused: ${(job.errors ?? []).map((e) => (e.line ? `line ${e.line}: ${e.message}` : e.message)).join('; ')}`;
    case 'expired':
      return `expired before it finished: ${progress}`;
    case 'cancelling':
    case 'cancelled':
      return `cancelled: ${progress} (kept)`;
    default:
      return `${job.status}: ${progress}`;
  }
}

/** What every answer about a job carries in `structuredContent`. */
export function summaryOf(job: JobView): Record<string, unknown> {
  return {
    job_id: job.id,
    status: job.status,
    pool: job.pool,
    model: job.model,
    counts: { ...job.counts },
    ...(job.outputFileId ? { output_file_id: job.outputFileId } : {}),
    ...(job.errorFileId ? { error_file_id: job.errorFileId } : {}),
    ...(job.errors?.length ? { errors: job.errors } : {}),
  };
}

export function finalText(job: JobView, isError: boolean): string {
  const files = [
    job.outputFileId && job.counts.total > VECTORS_MAX
      ? `the vectors are in file ${job.outputFileId} (GET /v1/files/${job.outputFileId}/content, or mcp-cluster batch results ${job.id} -o FILE)`
      : undefined,
    job.errorFileId ? `the failed rows are in file ${job.errorFileId}` : undefined,
  ].filter((s) => s !== undefined);
  const head = `Batch job ${job.id}: ${statusMessageOf(job)}${isError ? '' : ` with ${job.model}`}.`;
  const vectors =
    !isError && job.counts.total <= VECTORS_MAX && job.counts.completed > 0
      ? ' The vectors are in structuredContent.vectors, in input order, with their ids in structuredContent.ids.'
      : '';
  return `${head}${vectors}${files.length > 0 ? ` ${files.join('; ')}.` : ''}`;
}

export function pendingText(job: JobView): string {
  return `Batch job ${job.id} is ${statusMessageOf(job)}; it runs on without this call. Follow it with tasks/get ${job.id} (MCP Tasks), mcp-cluster batch status ${job.id} or GET /v1/batches/${job.id}; once it completed, its vectors are in the output file (mcp-cluster batch results ${job.id} -o FILE, or GET /v1/files/{output_file_id}/content).`;
}

/** Every JSONL row of a file the job engine serves, parsed. */
export async function readRows(
  jobs: BatchJobs,
  owner: JobOwner,
  fileId: string,
): Promise<Record<string, unknown>[]> {
  const decoder = new TextDecoder();
  const rows: Record<string, unknown>[] = [];
  let rest = '';
  const take = (line: string) => {
    if (line.trim() !== '') rows.push(JSON.parse(line) as Record<string, unknown>);
  };
  for await (const piece of jobs.fileContent(owner, fileId)) {
    rest += decoder.decode(piece, { stream: true });
    const lines = rest.split('\n');
    rest = lines.pop() ?? '';
    for (const line of lines) take(line);
  }
  take(rest + decoder.decode());
  return rows;
}

/** The id and vector of an output row, in the plain (`{id, embedding}`) or OpenAI Batch format. */
export function vectorRow(row: Record<string, unknown>): { id: string; vector: number[] } | undefined {
  if (typeof row.id === 'string' && Array.isArray(row.embedding))
    return { id: row.id, vector: row.embedding as number[] };
  const body = (row.response as { body?: { data?: { embedding?: unknown }[] } } | null)?.body;
  const embedding = body?.data?.[0]?.embedding;
  if (typeof row.custom_id === 'string' && Array.isArray(embedding))
    return { id: row.custom_id, vector: embedding as number[] };
  return undefined;
}

export function errorRow(
  row: Record<string, unknown>,
): { id: string; code?: string; message: string } | undefined {
  const id = typeof row.custom_id === 'string' ? row.custom_id : row.id;
  const error = row.error as { code?: unknown; message?: unknown } | null | undefined;
  if (typeof id !== 'string' || !error) return undefined;
  return {
    id,
    ...(typeof error.code === 'string' ? { code: error.code } : {}),
    message: typeof error.message === 'string' ? error.message : 'failed',
  };
}
