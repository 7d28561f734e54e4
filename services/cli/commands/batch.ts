import { accessSync, constants, createWriteStream, readFileSync, statSync } from 'node:fs';
import { basename, dirname } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ReadableStream as NodeReadableStream } from 'node:stream/web';
import { parseArgs } from 'node:util';
import type { ExitCode } from '../args.js';
import { help } from '../usage.js';

/** Where `mcp-cluster up` serves, minus `/mcp`. */
export const DEFAULT_CLUSTER_URL = 'http://127.0.0.1:3000';

/** The OpenAI Batch object as the cluster's `/v1/batches` answers it (the fields read here). */
export interface BatchObject {
  id: string;
  status: string;
  model?: string;
  errors: { data: { message: string; line: number | null }[] } | null;
  input_file_id: string | null;
  output_file_id: string | null;
  error_file_id: string | null;
  created_at: number;
  expires_at: number;
  completed_at: number | null;
  request_counts: { total: number; completed: number; failed: number };
  metadata: Record<string, string> | null;
}

const FINAL = new Set(['completed', 'failed', 'cancelled', 'expired']);
const USAGE = `usage:
  mcp-cluster batch submit FILE [--pool NAME] [--wait] [--json]
  mcp-cluster batch status ID [--json]
  mcp-cluster batch list [--limit N] [--json]
  mcp-cluster batch cancel ID [--json]
  mcp-cluster batch results ID -o FILE [--errors FILE] [--json]
common: --url URL ($MCP_CLUSTER_URL, default ${DEFAULT_CLUSTER_URL}), --api-key KEY ($MCP_CLUSTER_API_KEY)
        or --token TOKEN ($MCP_CLUSTER_TOKEN)`;

const COMMON = {
  url: { type: 'string' },
  'api-key': { type: 'string' },
  token: { type: 'string' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

/** What each subcommand takes beyond the common flags, and how many positional arguments. */
const SUBCOMMANDS = {
  submit: {
    args: ['FILE'],
    flags: { pool: { type: 'string' }, wait: { type: 'boolean' } },
  },
  status: { args: ['ID'], flags: {} },
  list: { args: [], flags: { limit: { type: 'string' } } },
  cancel: { args: ['ID'], flags: {} },
  results: {
    args: ['ID'],
    flags: { output: { type: 'string', short: 'o' }, errors: { type: 'string' } },
  },
} as const;
type Subcommand = keyof typeof SUBCOMMANDS;

/** Ends the command with `code` after printing `message` (no stack trace). */
class Failure extends Error {
  constructor(
    readonly code: ExitCode,
    message: string,
  ) {
    super(message);
  }
}
/** A usage error: the command line is incomplete (the usage follows the message). */
const usage = (message: string) => new Failure(2, `${message}\n${USAGE}`);
/** A bad flag value or argument: the message names it. */
const bad = (message: string) => new Failure(2, message);

/**
 * `mcp-cluster batch submit|status|list|cancel|results`: batch embedding jobs through the
 * cluster's OpenAI-compatible HTTP API (`/v1/files`, `/v1/batches`). Exit 0 done (`submit --wait`:
 * the job completed), 1 the job failed, expired or was cancelled, or the cluster could not be
 * reached or refused the request, 2 bad flags or a bad input file.
 */
export async function batch(args: string[]): Promise<ExitCode> {
  try {
    return await run(args);
  } catch (err) {
    if (!(err instanceof Failure)) throw err;
    process.stderr.write(`mcp-cluster batch: ${err.message}\n`);
    return err.code;
  }
}

async function run(args: string[]): Promise<ExitCode> {
  const [sub, ...rest] = args;
  if (sub === '-h' || sub === '--help' || sub === 'help') return help();
  if (sub === undefined) throw usage('name a subcommand');
  if (!Object.hasOwn(SUBCOMMANDS, sub)) throw usage(`unknown subcommand "${sub}"`);
  const spec = SUBCOMMANDS[sub as Subcommand];
  let parsed: { values: Record<string, string | boolean | undefined>; positionals: string[] };
  try {
    const options: Record<string, { type: 'string' | 'boolean'; short?: string }> = {
      ...COMMON,
      ...spec.flags,
    };
    parsed = parseArgs({ args: rest, options, strict: true, allowPositionals: true });
  } catch (err) {
    throw usage(`${sub}: ${(err as Error).message}`);
  }
  const values = parsed.values;
  if (values.help) return help();
  const positionals = parsed.positionals;
  if (positionals.length < spec.args.length) throw usage(`${sub} needs ${spec.args.join(' ')}`);
  if (positionals.length > spec.args.length) {
    throw usage(`${sub}: unexpected argument "${positionals[spec.args.length]}"`);
  }
  const api = new ClusterApi(urlOf(values.url), credentialOf(values));
  const json = values.json === true;
  switch (sub as Subcommand) {
    case 'submit':
      return submit(api, String(positionals[0]), {
        pool: stringFlag(values.pool, '--pool'),
        wait: values.wait === true,
        json,
      });
    case 'status':
      return status(api, idArg(positionals[0]), json);
    case 'list':
      return list(api, limitFlag(values.limit), json);
    case 'cancel':
      return cancel(api, idArg(positionals[0]), json);
    case 'results': {
      const output = stringFlag(values.output, '-o');
      if (output === undefined) throw usage('results needs -o FILE: where to write the output rows');
      return results(api, idArg(positionals[0]), output, stringFlag(values.errors, '--errors'), json);
    }
  }
}

function stringFlag(value: string | boolean | undefined, flag: string): string | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'string' || value.trim() === '') throw bad(`${flag} needs a value`);
  return value;
}

/** The cluster's base URL: `--url`, else `$MCP_CLUSTER_URL`, else the default; a trailing `/mcp` or `/v1` is dropped. */
function urlOf(flag: string | boolean | undefined): string {
  const given = typeof flag === 'string' ? flag : process.env.MCP_CLUSTER_URL || DEFAULT_CLUSTER_URL;
  const source =
    typeof flag === 'string' ? '--url' : process.env.MCP_CLUSTER_URL ? 'MCP_CLUSTER_URL' : 'the default';
  let url: URL;
  try {
    url = new URL(given);
  } catch {
    throw bad(
      `${source} must be the cluster's http:// or https:// URL, e.g. ${DEFAULT_CLUSTER_URL}; got "${given}"`,
    );
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw bad(`${source} must be an http:// or https:// URL, got "${given}"`);
  }
  return url.href.replace(/\/+$/, '').replace(/\/(mcp|v1)$/, '');
}

/** The `Authorization` header: `--api-key` or `--token`, else their environment variables. */
function credentialOf(values: Record<string, string | boolean | undefined>): string | undefined {
  const key = stringFlag(values['api-key'], '--api-key');
  const token = stringFlag(values.token, '--token');
  if (key !== undefined && token !== undefined) throw bad('pass either --api-key or --token, not both');
  const credential =
    key ?? token ?? (process.env.MCP_CLUSTER_API_KEY || process.env.MCP_CLUSTER_TOKEN || undefined);
  if (credential !== undefined && /[\s\0]/.test(credential.trim())) {
    throw bad('the API key or token contains whitespace; pass it as it was printed');
  }
  return credential === undefined ? undefined : `Bearer ${credential.trim()}`;
}

const ID = /^[A-Za-z0-9_-]{1,200}$/;
function idArg(value: string | undefined): string {
  if (value === undefined || !ID.test(value)) {
    throw bad(`"${value ?? ''}" is not a batch id (batch_... as submit printed it)`);
  }
  return value;
}

function limitFlag(value: string | boolean | undefined): number | undefined {
  const text = stringFlag(value, '--limit');
  if (text === undefined) return undefined;
  const n = /^\d{1,3}$/.test(text) ? Number(text) : Number.NaN;
  if (!(n >= 1 && n <= 100)) throw bad(`--limit must be a whole number from 1 to 100, got "${text}"`);
  return n;
}

// ---------------------------------------------------------------------------------------------
// The subcommands

async function submit(
  api: ClusterApi,
  path: string,
  options: { pool: string | undefined; wait: boolean; json: boolean },
): Promise<ExitCode> {
  const bytes = readInput(path);
  const name = basename(path);
  const file = await api.upload(name, bytes).catch(
    refusedAs(
      (e) => (e.status === 400 || e.status === 413 ? 2 : undefined),
      (e) => `${path}: ${e.message}`,
    ),
  );
  const created = (await api
    .json('POST', '/v1/batches', {
      input_file_id: file.id,
      endpoint: '/v1/embeddings',
      ...(options.pool ? { pool: options.pool } : {}),
    })
    .catch(
      refusedAs(
        (e) => (e.status === 400 ? 2 : undefined),
        (e) =>
          e.param === 'pool' || /pool/i.test(e.message) ? `--pool: ${e.message}` : `${path}: ${e.message}`,
      ),
    )) as BatchObject;
  if (!options.wait) {
    if (options.json) printJson(created);
    else {
      process.stdout.write(
        `${created.id} ${created.status}: ${created.request_counts.total} rows from ${path}\n` +
          `  follow it:   mcp-cluster batch status ${created.id}\n` +
          `  its results: mcp-cluster batch results ${created.id} -o ${name.replace(/\.jsonl?$/i, '')}.out.jsonl\n`,
      );
    }
    return 0;
  }
  const started = Date.now();
  const final = await follow(api, created);
  if (options.json) printJson(final);
  else process.stdout.write(`${summaryOf(final, Date.now() - started)}\n`);
  return final.status === 'completed' ? 0 : 1;
}

async function status(api: ClusterApi, id: string, json: boolean): Promise<ExitCode> {
  const job = (await api.json('GET', `/v1/batches/${id}`).catch(refusedAs())) as BatchObject;
  if (json) printJson(job);
  else process.stdout.write(describe(job));
  return 0;
}

async function list(api: ClusterApi, limit: number | undefined, json: boolean): Promise<ExitCode> {
  const page = (await api.json('GET', `/v1/batches${limit ? `?limit=${limit}` : ''}`).catch(refusedAs())) as {
    data: BatchObject[];
    has_more: boolean;
  };
  if (json) {
    printJson(page);
    return 0;
  }
  if (page.data.length === 0) {
    process.stdout.write('no batches\n');
    return 0;
  }
  const rows = page.data.map((b) => [
    b.id,
    b.status,
    `${b.request_counts.completed + b.request_counts.failed}/${b.request_counts.total}`,
    String(b.request_counts.failed),
    new Date(b.created_at * 1000).toISOString().replace(/\.\d+Z$/, 'Z'),
  ]);
  process.stdout.write(table([['ID', 'STATUS', 'DONE/TOTAL', 'FAILED', 'CREATED'], ...rows]));
  if (page.has_more) process.stdout.write(`(more: --limit up to 100)\n`);
  return 0;
}

async function cancel(api: ClusterApi, id: string, json: boolean): Promise<ExitCode> {
  const job = (await api.json('POST', `/v1/batches/${id}/cancel`).catch(refusedAs())) as BatchObject;
  if (json) printJson(job);
  else {
    const { completed, failed, total } = job.request_counts;
    process.stdout.write(
      `${job.id} ${job.status}: ${completed} rows done and kept, ${failed} failed, of ${total}\n`,
    );
  }
  return 0;
}

async function results(
  api: ClusterApi,
  id: string,
  output: string,
  errors: string | undefined,
  json: boolean,
): Promise<ExitCode> {
  // The destinations are opened before anything is downloaded: a path that cannot be written is a bad flag.
  checkWritable(output, '-o');
  if (errors !== undefined) checkWritable(errors, '--errors');
  const job = (await api.json('GET', `/v1/batches/${id}`).catch(refusedAs())) as BatchObject;
  const written: Record<string, { file: string; rows: number }> = {};
  written.output = { file: output, rows: await api.download(job.output_file_id, output) };
  if (errors !== undefined)
    written.errors = { file: errors, rows: await api.download(job.error_file_id, errors) };
  const partial = !FINAL.has(job.status);
  if (json) {
    printJson({ batch: job, ...written });
    return 0;
  }
  const lines = [`wrote ${written.output?.rows ?? 0} output rows to ${output}`];
  if (written.errors) lines.push(`wrote ${written.errors.rows} error rows to ${errors}`);
  else if (job.request_counts.failed > 0)
    lines.push(`${job.request_counts.failed} rows failed: pass --errors FILE to write them`);
  if (partial) lines.push(`${job.id} is ${job.status}: these are the rows done so far`);
  process.stdout.write(`${lines.join('\n')}\n`);
  return 0;
}

// ---------------------------------------------------------------------------------------------
// Waiting for a job

/** Polls the job until it is final, drawing its progress on stderr; returns the final job. */
async function follow(api: ClusterApi, first: BatchObject): Promise<BatchObject> {
  const tty = process.stderr.isTTY === true;
  const view = new ProgressView(
    (text) => process.stderr.write(text),
    tty,
    Date.now,
    () => process.stderr.columns,
  );
  const intervalMs = tty ? 250 : 1000;
  const onInterrupt = () => {
    view.end();
    process.stderr.write(
      `\nstopped waiting; ${first.id} keeps running: mcp-cluster batch status ${first.id}\n`,
    );
    process.exit(130);
  };
  process.once('SIGINT', onInterrupt);
  try {
    let job = first;
    let unreachableSince: number | undefined;
    view.update(job);
    while (!FINAL.has(job.status)) {
      await new Promise((resolve) => setTimeout(resolve, intervalMs));
      try {
        job = (await api.json('GET', `/v1/batches/${job.id}`)) as BatchObject;
        unreachableSince = undefined;
      } catch (err) {
        // A restarting ingress or broker: keep trying for a while before giving up.
        if (!(err instanceof Failure || err instanceof ApiRefusal)) throw err;
        const transient = err instanceof Failure || err.status >= 500;
        if (!transient) throw toFailure(err);
        unreachableSince ??= Date.now();
        if (Date.now() - unreachableSince > UNREACHABLE_GIVE_UP_MS) {
          throw err instanceof Failure ? err : toFailure(err);
        }
        continue;
      }
      view.update(job);
    }
    view.end();
    return job;
  } finally {
    process.off('SIGINT', onInterrupt);
  }
}

/** How long `--wait` keeps polling a cluster that stopped answering. */
const UNREACHABLE_GIVE_UP_MS = 30_000;

/**
 * The progress of a job: on a terminal one line redrawn in place (`\r`) at most four times a
 * second with rows done/total, percent, rate, ETA and failed rows; elsewhere a plain line per
 * state change and at most one every five seconds.
 */
export class ProgressView {
  private readonly samples: { at: number; done: number }[] = [];
  private lastDraw = Number.NEGATIVE_INFINITY;
  private lastStatus: string | undefined;
  private drawn = false;

  constructor(
    private readonly write: (text: string) => void,
    private readonly tty: boolean,
    private readonly now: () => number = Date.now,
    /** The terminal's width: a longer line would wrap, and `\r` redraw only its last row. */
    private readonly columns: () => number | undefined = () => undefined,
  ) {}

  update(job: BatchObject): void {
    const at = this.now();
    const { completed, failed, total } = job.request_counts;
    const done = completed + failed;
    this.samples.push({ at, done });
    // The rate over the last ten seconds: recent enough to follow a change of speed.
    while (this.samples.length > 2 && at - (this.samples[1]?.at ?? at) >= RATE_WINDOW_MS)
      this.samples.shift();
    const changed = job.status !== this.lastStatus;
    this.lastStatus = job.status;
    const final = FINAL.has(job.status);
    const every = this.tty ? TTY_REDRAW_MS : PLAIN_LINE_MS;
    if (!changed && !final && at - this.lastDraw < every) return;
    this.lastDraw = at;
    const parts = this.partsOf(job, done, total, failed, at);
    if (this.tty) {
      // On a narrow terminal the bar goes first, then the id: the numbers always show.
      // A terminal that does not say its width (0, as under `script`) is taken as wide enough.
      const columns = this.columns();
      const width = columns && columns >= 20 ? columns - 1 : Number.POSITIVE_INFINITY;
      let line = [parts.id, parts.status, parts.bar, ...parts.numbers].join('  ');
      if (line.length > width) line = [parts.id, parts.status, ...parts.numbers].join('  ');
      if (line.length > width) line = [parts.status, ...parts.numbers].join('  ');
      if (line.length > width) line = [parts.status, ...parts.numbers].join(' ');
      this.write(`\r${line.slice(0, width)}\x1b[K`);
      this.drawn = true;
    } else this.write(`${[parts.id, parts.status, ...parts.numbers].join('  ')}\n`);
  }

  /** Ends the redrawn line. */
  end(): void {
    if (this.tty && this.drawn) this.write('\n');
    this.drawn = false;
  }

  private partsOf(job: BatchObject, done: number, total: number, failed: number, at: number) {
    const fraction = total > 0 ? done / total : 0;
    const oldest = this.samples[0];
    const seconds = oldest ? (at - oldest.at) / 1000 : 0;
    const rate = oldest && seconds >= 0.5 ? (done - oldest.done) / seconds : undefined;
    const left = total - done;
    const eta =
      FINAL.has(job.status) || left <= 0 ? '0s' : rate && rate > 0 ? durationText(left / rate) : '--';
    return {
      id: job.id,
      status: job.status,
      bar: bar(fraction),
      numbers: [
        `${done}/${total} rows`,
        `${(fraction * 100).toFixed(1)}%`,
        `${rate === undefined ? '--' : rate < 10 ? rate.toFixed(1) : Math.round(rate)} rows/s`,
        `ETA ${eta}`,
        `failed ${failed}`,
      ],
    };
  }
}

const RATE_WINDOW_MS = 10_000;
const TTY_REDRAW_MS = 250;
const PLAIN_LINE_MS = 5000;

function bar(fraction: number): string {
  const width = 20;
  const full = Math.min(width, Math.floor(fraction * width));
  return `[${'#'.repeat(full)}${'.'.repeat(width - full)}]`;
}

/** `45s`, `3m05s`, `2h07m`. */
export function durationText(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

function summaryOf(job: BatchObject, elapsedMs: number): string {
  const { completed, failed, total } = job.request_counts;
  const head = `${job.id} ${job.status}: ${completed}/${total} rows done, ${failed} failed in ${durationText(elapsedMs / 1000)}`;
  const problems = job.errors?.data.map((e) => `  ${e.line ? `line ${e.line}: ` : ''}${e.message}`) ?? [];
  const next =
    completed + failed > 0
      ? [`  results: mcp-cluster batch results ${job.id} -o FILE${failed > 0 ? ' --errors FILE' : ''}`]
      : [];
  return [head, ...problems, ...next].join('\n');
}

function describe(job: BatchObject): string {
  const { completed, failed, total } = job.request_counts;
  const done = completed + failed;
  const time = (s: number | null) => (s ? new Date(s * 1000).toISOString().replace(/\.\d+Z$/, 'Z') : '-');
  const rows: [string, string][] = [
    ['id', job.id],
    ['status', job.status],
    [
      'rows',
      `${done}/${total} done (${total > 0 ? ((done / total) * 100).toFixed(1) : '0.0'}%), ${failed} failed`,
    ],
    ...(job.model ? [['model', job.model] as [string, string]] : []),
    ['created', time(job.created_at)],
    ['expires', time(job.expires_at)],
    ...(job.completed_at ? [['completed', time(job.completed_at)] as [string, string]] : []),
    ['input file', job.input_file_id ?? '-'],
    ['output file', job.output_file_id ?? '-'],
    ['error file', job.error_file_id ?? '-'],
  ];
  if (job.metadata && Object.keys(job.metadata).length > 0) {
    rows.push([
      'metadata',
      Object.entries(job.metadata)
        .map(([k, v]) => `${k}=${v}`)
        .join(' '),
    ]);
  }
  for (const e of job.errors?.data ?? [])
    rows.push(['problem', `${e.line ? `line ${e.line}: ` : ''}${e.message}`]);
  const width = Math.max(...rows.map(([k]) => k.length)) + 2;
  return rows.map(([k, v]) => `${`${k}:`.padEnd(width)}${v}\n`).join('');
}

function table(rows: string[][]): string {
  const widths = rows[0]?.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length))) ?? [];
  return rows
    .map(
      (r) =>
        `${r
          .map((c, i) => c.padEnd(widths[i] ?? 0))
          .join('  ')
          .trimEnd()}\n`,
    )
    .join('');
}

function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

// ---------------------------------------------------------------------------------------------
// The input file, checked here before anything is sent

/** Largest file read (the server's own limit, `batch.maxInputSize`, is usually lower). */
const MAX_LOCAL_FILE = 2 ** 31 - 1;
/** Bad lines named before giving up. */
const MAX_NAMED_LINES = 5;

/** The input file's bytes, after checking it is UTF-8 with one JSON object per non-blank line. */
function readInput(path: string): Buffer<ArrayBuffer> {
  let bytes: Buffer<ArrayBuffer>;
  try {
    const stat = statSync(path);
    if (stat.isDirectory()) throw new Failure(2, `${path} is a directory; give a JSONL file`);
    if (stat.size > MAX_LOCAL_FILE)
      throw new Failure(2, `${path} is ${stat.size} bytes: split it into several jobs`);
    bytes = readFileSync(path);
  } catch (err) {
    if (err instanceof Failure) throw err;
    const e = err as NodeJS.ErrnoException;
    const why =
      e.code === 'ENOENT'
        ? 'no such file'
        : e.code === 'EACCES'
          ? 'permission denied'
          : (e.code ?? e.message);
    throw new Failure(2, `cannot read ${path}: ${why}`);
  }
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    throw new Failure(2, `${path} is not UTF-8 text; give JSONL, one JSON object per line`);
  }
  const problems: string[] = [];
  let lines = 0;
  let lineNumber = 0;
  for (const raw of text.split('\n')) {
    lineNumber++;
    const line = raw.trim();
    if (line === '') continue;
    lines++;
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch (err) {
      problems.push(`line ${lineNumber}: not JSON (${(err as Error).message})`);
      if (problems.length >= MAX_NAMED_LINES) break;
      continue;
    }
    if (typeof value !== 'object' || value === null || Array.isArray(value)) {
      problems.push(
        `line ${lineNumber}: not a JSON object; give {"id": ..., "text": ...} or an OpenAI batch line`,
      );
      if (problems.length >= MAX_NAMED_LINES) break;
    }
  }
  if (problems.length > 0)
    throw new Failure(2, `${path}: nothing was submitted:\n  ${problems.join('\n  ')}`);
  if (lines === 0) throw new Failure(2, `${path} has no input lines; give one JSON object per line`);
  return bytes;
}

function checkWritable(path: string, flag: string): void {
  const refuse = (why: string) => new Failure(2, `${flag} ${path}: cannot write it (${why})`);
  try {
    if (statSync(path).isDirectory()) throw refuse('it is a directory');
    accessSync(path, constants.W_OK);
  } catch (err) {
    if (err instanceof Failure) throw err;
    const e = err as NodeJS.ErrnoException;
    if (e.code !== 'ENOENT') throw refuse(e.code ?? e.message);
    // A new file: its directory must exist and be writable.
    try {
      if (!statSync(dirname(path)).isDirectory()) throw refuse(`${dirname(path)} is not a directory`);
      accessSync(dirname(path), constants.W_OK);
    } catch (inner) {
      if (inner instanceof Failure) throw inner;
      const i = inner as NodeJS.ErrnoException;
      throw refuse(i.code === 'ENOENT' ? `no directory ${dirname(path)}` : (i.code ?? i.message));
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The HTTP API

/** A refusal of the cluster's API: its status and the OpenAI error's message, code and param. */
class ApiRefusal extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly code: string | undefined,
    readonly param: string | undefined,
  ) {
    super(message);
  }
}

/** Timeout of one API request; an upload gets longer. */
const REQUEST_TIMEOUT_MS = 30_000;
const UPLOAD_TIMEOUT_MS = 30 * 60_000;

class ClusterApi {
  constructor(
    readonly base: string,
    private readonly authorization: string | undefined,
  ) {}

  async json(method: 'GET' | 'POST', path: string, body?: unknown): Promise<unknown> {
    const res = await this.send(path, {
      method,
      ...(body === undefined
        ? {}
        : { body: JSON.stringify(body), headers: { 'content-type': 'application/json' } }),
    });
    return res.json();
  }

  async upload(filename: string, bytes: Uint8Array<ArrayBuffer>): Promise<{ id: string }> {
    const form = new FormData();
    form.set('purpose', 'batch');
    form.set('file', new Blob([bytes], { type: 'application/jsonl' }), filename);
    const res = await this.send('/v1/files', { method: 'POST', body: form }, UPLOAD_TIMEOUT_MS);
    return (await res.json()) as { id: string };
  }

  /** Writes file `fileId`'s content to `path` (an empty file when there is none); returns its rows. */
  async download(fileId: string | null, path: string): Promise<number> {
    const out = createWriteStream(path);
    if (!fileId) {
      await new Promise<void>((resolve, reject) =>
        out.end((err?: Error | null) => (err ? reject(err) : resolve())),
      );
      return 0;
    }
    const res = await this.send(`/v1/files/${fileId}/content`, { method: 'GET' }, UPLOAD_TIMEOUT_MS).catch(
      refusedAs(),
    );
    let rows = 0;
    const body = Readable.fromWeb(res.body as NodeReadableStream<Uint8Array>);
    body.on('data', (chunk: Buffer) => {
      for (const byte of chunk) if (byte === 10) rows++;
    });
    try {
      await pipeline(body, out);
    } catch (err) {
      throw new Failure(1, `downloading ${fileId} to ${path} failed: ${(err as Error).message}`);
    }
    return rows;
  }

  /** Sends a request; a network failure is a Failure (exit 1), a refusal an ApiRefusal. */
  private async send(path: string, init: RequestInit, timeoutMs = REQUEST_TIMEOUT_MS): Promise<Response> {
    const headers = new Headers(init.headers);
    if (this.authorization) headers.set('authorization', this.authorization);
    let res: Response;
    try {
      res = await fetch(`${this.base}${path}`, { ...init, headers, signal: AbortSignal.timeout(timeoutMs) });
    } catch (err) {
      const cause = (err as { cause?: { code?: string; message?: string } }).cause;
      const why =
        (err as Error).name === 'TimeoutError'
          ? `no answer within ${timeoutMs / 1000} s`
          : (cause?.code ?? cause?.message ?? (err as Error).message);
      throw new Failure(
        1,
        `cannot reach the cluster at ${this.base} (${why}); is it running? Pass --url or set MCP_CLUSTER_URL`,
      );
    }
    if (res.ok) return res;
    const text = await res.text().catch(() => '');
    throw refusalOf(res.status, text, path);
  }
}

/** The refusal in an answer's body: the OpenAI error shape, an OAuth error, or the role's 404. */
function refusalOf(status: number, text: string, path: string): ApiRefusal {
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    body = undefined;
  }
  const error = (body as { error?: unknown } | undefined)?.error;
  if (typeof error === 'object' && error !== null) {
    const e = error as { message?: unknown; code?: unknown; param?: unknown };
    return new ApiRefusal(
      status,
      typeof e.message === 'string' ? e.message : `HTTP ${status}`,
      typeof e.code === 'string' ? e.code : undefined,
      typeof e.param === 'string' ? e.param : undefined,
    );
  }
  const description = (body as { error_description?: unknown } | undefined)?.error_description;
  if (typeof description === 'string') return new ApiRefusal(status, description, String(error), undefined);
  if (status === 404 && typeof error === 'string' && error.startsWith('no route')) {
    return new ApiRefusal(status, `this server has no batch API (${error})`, 'no_batch_api', undefined);
  }
  return new ApiRefusal(
    status,
    `HTTP ${status} on ${path}${text ? `: ${text.slice(0, 200)}` : ''}`,
    undefined,
    undefined,
  );
}

/**
 * Turns an API refusal into the command's failure: `exitOf` may claim it as a bad argument (2),
 * the rest exit 1 with a message saying what to do.
 */
function refusedAs(
  exitOf: (e: ApiRefusal) => ExitCode | undefined = () => undefined,
  messageOf: (e: ApiRefusal) => string = (e) => e.message,
): (err: unknown) => never {
  return (err) => {
    if (!(err instanceof ApiRefusal)) throw err;
    const code = exitOf(err);
    if (code !== undefined) throw new Failure(code, messageOf(err));
    throw toFailure(err, messageOf(err));
  };
}

function toFailure(err: ApiRefusal, message = err.message): Failure {
  if (err.status === 401) {
    return new Failure(
      1,
      `the cluster refused the credential (401: ${message}); pass --api-key KEY or --token TOKEN, or set MCP_CLUSTER_API_KEY or MCP_CLUSTER_TOKEN`,
    );
  }
  if (err.status === 403) return new Failure(1, `the cluster refused the request (403: ${message})`);
  if (err.status === 404 && err.code === 'not_found') {
    return new Failure(1, `${message} (unknown here, or not your tenant's)`);
  }
  return new Failure(1, `the cluster answered ${err.status}: ${message}`);
}
