/**
 * Batch jobs: a large embedding input handed over once, split into chunks that flow through a
 * pool's queue as low-priority calls, with every piece of state in the broker's job store. The
 * engine behind the three ways in (MCP tasks, the `batch` CLI, the OpenAI-compatible HTTP API).
 */

/** Who a job or file belongs to: only the same tenant may see, read or cancel it. */
export interface JobOwner {
  tenant: string;
  /** Recorded for audit; any principal of the tenant may act on the tenant's jobs. */
  principal: string;
}

/**
 * A job's states, as the OpenAI Batch API names them: `validating` while the input is checked
 * and chunked, `in_progress` while chunks run, `finalizing` once every chunk is settled,
 * `completed`; `failed` when the input was refused; `cancelling` then `cancelled`; `expired`
 * when the completion window passed first. Only `completed`, `failed`, `cancelled` and
 * `expired` are final.
 */
export type JobStatus =
  | 'validating'
  | 'in_progress'
  | 'finalizing'
  | 'completed'
  | 'failed'
  | 'cancelling'
  | 'cancelled'
  | 'expired';

/** The input line format a job was submitted in; the output rows follow it. */
export type JobFormat = 'openai' | 'plain';

/** A job as callers see it. Times are Unix seconds, as in the OpenAI Batch API. */
export interface JobView {
  id: string;
  status: JobStatus;
  /** The pool whose queue the chunks run on, and the embed tool of that pool. */
  pool: string;
  tool: string;
  model: string;
  format: JobFormat;
  /** Input lines (rows) in all; completed and failed count rows, not chunks. */
  counts: { total: number; completed: number; failed: number };
  /** Chunks in all, and settled so far (completed or failed). */
  chunks: { total: number; settled: number };
  createdAt: number;
  inProgressAt?: number;
  finalizingAt?: number;
  completedAt?: number;
  failedAt?: number;
  cancellingAt?: number;
  cancelledAt?: number;
  expiredAt?: number;
  /** When the completion window ends. */
  expiresAt: number;
  /** The uploaded file the job was made from, when it was. */
  inputFileId?: string;
  /** Readable once rows completed (also while in progress: what is done so far). */
  outputFileId?: string;
  /** Readable once rows failed. */
  errorFileId?: string;
  /** Why a job failed as a whole (its input refused), with the first offending lines. */
  errors?: { line?: number; message: string }[];
  metadata?: Record<string, string>;
}

/** An uploaded input file, or a job's output or error file. */
export interface FileView {
  id: string;
  bytes: number;
  createdAt: number;
  filename: string;
  purpose: 'batch' | 'batch_output';
}

/** One input item: what to embed and the id its output row carries. */
export interface JobItem {
  id: string;
  text: string;
}

/** What a job is made from. */
export type JobInput =
  /** A file uploaded before (`uploadFile`), JSONL in either line format. */
  | { fileId: string }
  /** JSONL text or bytes in either line format. */
  | { jsonl: string | Uint8Array }
  /** Items given inline (the MCP tool's small jobs); output rows are in the plain format. */
  | { items: JobItem[] };

/** Options of a submission. */
export interface SubmitOptions {
  /** Pool to run the chunks on; default `batch.pool`. It must serve an `embed` tool. */
  pool?: string;
  /** How long the job may take before it expires; default and most `batch.completionWindow`. */
  completionWindowMs?: number;
  /** Up to 16 short string pairs kept with the job. */
  metadata?: Record<string, string>;
}

/**
 * The batch engine. Every method rejects with a ClusterError: `UNKNOWN_JOB` for an id that is
 * not the caller's tenant's (absent, deleted, or another tenant's: the two are not told apart),
 * `INVALID_ARGUMENTS` naming the line and the problem for bad input, `QUEUE_UNAVAILABLE` when
 * the broker cannot be reached.
 */
export interface BatchJobs {
  /** Stores an input file (JSONL, checked line by line as `submit` would) for a later submit. */
  uploadFile(owner: JobOwner, filename: string, bytes: Uint8Array): Promise<FileView>;
  /** A file's metadata: an uploaded input, or a job's output or error file. */
  getFile(owner: JobOwner, fileId: string): Promise<FileView>;
  /**
   * A file's content as JSONL, streamed: an uploaded file as it was uploaded; a job's output
   * file as one row per completed input item in input order, each with its id; the error file as
   * one row per failed item.
   */
  fileContent(owner: JobOwner, fileId: string): AsyncIterable<Uint8Array>;
  /** Validates every line, stores the chunks, enqueues them, and returns the job `in_progress`. */
  submit(owner: JobOwner, input: JobInput, options?: SubmitOptions): Promise<JobView>;
  get(owner: JobOwner, jobId: string): Promise<JobView>;
  /** The tenant's jobs, newest first, at most `limit` (default 20, at most 100), after job `after`. */
  list(owner: JobOwner, options?: { limit?: number; after?: string }): Promise<JobView[]>;
  /**
   * Jobs of every tenant, for operators (the ingress's status page, behind its admin scope; never
   * for callers, as it crosses tenants): unfinished jobs first, then finished ones, newest first in
   * each, at most `limit` (default 20, at most 100), each with its tenant.
   */
  overview(limit?: number): Promise<(JobView & { tenant: string })[]>;
  /** Stops the job: queued chunks are dropped, rows already done are kept; returns it `cancelling` or `cancelled`. */
  cancel(owner: JobOwner, jobId: string): Promise<JobView>;
}
