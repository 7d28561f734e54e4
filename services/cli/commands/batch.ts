import { accessSync, constants, readFileSync, statSync } from 'node:fs';
import { basename, dirname } from 'node:path';
import { parseArgs } from 'node:util';
import type { ExitCode } from '../args.js';
import { ApiRefusal, ClusterApi, Failure, refusedAs, toFailure } from '../batch-client.js';
import { type BatchObject, durationText, FINAL, ProgressView } from '../batch-progress.js';
import { help } from '../usage.js';

/** Where `mcp-cluster up` serves, minus `/mcp`. */
export const DEFAULT_CLUSTER_URL = 'http://127.0.0.1:3000';
// The view of a job lives apart (batch-progress.ts); its tests import it from here too.
export { type BatchObject, durationText, ProgressView };

const USAGE = `usage:
  mcp-cluster batch submit FILE [--pool NAME] [--wait] [--json]
  mcp-cluster batch status ID [--json]
  mcp-cluster batch list [--limit N] [--json]
  mcp-cluster batch cancel ID [--json]
  mcp-cluster batch results ID -o FILE [--errors FILE] [--json]
common: --url URL ($MCP_CLUSTER_URL, default ${DEFAULT_CLUSTER_URL}), --api-key KEY ($MCP_CLUSTER_API_KEY)
        or --token TOKEN ($MCP_CLUSTER_TOKEN)`;

/** The flags every `mcp-cluster batch` subcommand takes. */
export const BATCH_OPTIONS = {
  url: { type: 'string' },
  'api-key': { type: 'string' },
  token: { type: 'string' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

/** What each subcommand takes beyond the common flags, and how many positional arguments. */
export const BATCH_SUBCOMMANDS = {
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
type Subcommand = keyof typeof BATCH_SUBCOMMANDS;

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
  if (!Object.hasOwn(BATCH_SUBCOMMANDS, sub)) throw usage(`unknown subcommand "${sub}"`);
  const spec = BATCH_SUBCOMMANDS[sub as Subcommand];
  let parsed: { values: Record<string, string | boolean | undefined>; positionals: string[] };
  try {
    const options: Record<string, { type: 'string' | 'boolean'; short?: string }> = {
      ...BATCH_OPTIONS,
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
