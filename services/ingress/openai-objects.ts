import type { FileView, JobView } from '../jobs/index.js';

// The OpenAI Files and Batch API objects the ingress answers with (services/ingress/batch-api.ts),
// built from the engine's views.

/** The one endpoint a batch may name: the cluster runs embedding batches only. */
export const EMBEDDINGS = '/v1/embeddings';

/** The OpenAI File object of a file. */
export function fileObject(file: FileView) {
  return {
    id: file.id,
    object: 'file',
    bytes: file.bytes,
    created_at: file.createdAt,
    filename: file.filename,
    purpose: file.purpose,
    status: 'processed',
    expires_at: null,
    status_details: null,
  };
}

/** The OpenAI Batch object of a job. */
export function batchObject(job: JobView) {
  return {
    id: job.id,
    object: 'batch',
    endpoint: EMBEDDINGS,
    model: job.model,
    errors:
      job.errors && job.errors.length > 0
        ? {
            object: 'list',
            data: job.errors.map((e) => ({
              code: e.line === undefined ? 'invalid_input' : 'invalid_line',
              message: e.message,
              param: null,
              line: e.line ?? null,
            })),
          }
        : null,
    input_file_id: job.inputFileId ?? null,
    completion_window: windowText(job.expiresAt - job.createdAt),
    status: job.status,
    output_file_id: job.outputFileId ?? null,
    error_file_id: job.errorFileId ?? null,
    created_at: job.createdAt,
    in_progress_at: job.inProgressAt ?? null,
    expires_at: job.expiresAt,
    finalizing_at: job.finalizingAt ?? null,
    completed_at: job.completedAt ?? null,
    failed_at: job.failedAt ?? null,
    expired_at: job.expiredAt ?? null,
    cancelling_at: job.cancellingAt ?? null,
    cancelled_at: job.cancelledAt ?? null,
    request_counts: { total: job.counts.total, completed: job.counts.completed, failed: job.counts.failed },
    metadata: job.metadata ?? null,
  };
}

/** A completion window in seconds as OpenAI writes it: `24h`, else minutes or seconds. */
function windowText(seconds: number): string {
  if (seconds > 0 && seconds % 3600 === 0) return `${seconds / 3600}h`;
  if (seconds > 0 && seconds % 60 === 0) return `${seconds / 60}m`;
  return `${Math.max(0, Math.round(seconds))}s`;
}
