import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type BatchObject, ProgressView } from '../services/cli/commands/batch.js';
import { createApiKey, keysFileEntry } from '../services/ingress/index.js';
import { findOnPath, freePort, removeTempDir, trackChild, trackTempDir } from './support/process-guard.js';
import {
  CLI,
  cleanEnv,
  type RoleProcess,
  runCli,
  STACK_TRACE,
  startRole,
  startUp as startUpProcess,
} from './support/processes.js';
import { waitFor } from './support/wait.js';

const dir = mkdtempSync(join(tmpdir(), 'mcp-cluster-batch-cli-'));
trackTempDir(dir);
afterAll(() => removeTempDir(dir));

/** Writes `text` to a file of the suite's directory; returns its path. */
const file = (name: string, text: string | Buffer) => {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
};
const plain = (ids: string[]) =>
  `${ids.map((id) => JSON.stringify({ id, text: `the text of ${id}` })).join('\n')}\n`;
const ids = (n: number, prefix: string) => Array.from({ length: n }, (_, i) => `${prefix}-${i}`);

/** Runs `mcp-cluster batch <args>`. */
const batch = (args: string[], env: Record<string, string> = {}) => runCli(['batch', ...args], env, 60_000);

describe('mcp-cluster batch: flags and files refused before anything is sent', () => {
  const good = file('good.jsonl', plain(['a', 'b']));
  mkdirSync(join(dir, 'a-directory'));
  const cases: [string, string[], RegExp, Record<string, string>?][] = [
    ['no subcommand', [], /name a subcommand/],
    ['an unknown subcommand', ['frob'], /unknown subcommand "frob"/],
    ['submit without FILE', ['submit'], /submit needs FILE/],
    ['a second FILE', ['submit', good, 'other.jsonl'], /unexpected argument "other\.jsonl"/],
    ['status without ID', ['status'], /status needs ID/],
    ['an ID that is no id', ['status', 'x y'], /"x y" is not a batch id/],
    ['an unknown flag', ['list', '--bogus'], /Unknown option '--bogus'/],
    ['a value for --wait', ['submit', good, '--wait=yes'], /--wait/],
    ['--limit 0', ['list', '--limit', '0'], /--limit must be a whole number from 1 to 100, got "0"/],
    ['--limit abc', ['list', '--limit', 'abc'], /--limit must be a whole number/],
    ['--pool without value', ['submit', good, '--pool'], /--pool/],
    [
      '--url not http',
      ['list', '--url', 'ftp://example.com'],
      /--url must be an http:\/\/ or https:\/\/ URL/,
    ],
    ['--url not a URL', ['list', '--url', 'not a url'], /--url must be the cluster's http/],
    [
      'MCP_CLUSTER_URL not a URL',
      ['list'],
      /MCP_CLUSTER_URL must be an http:\/\/ or https:\/\/ URL, got "localhost:3000"/,
      { MCP_CLUSTER_URL: 'localhost:3000' },
    ],
    ['--api-key and --token', ['list', '--api-key', 'k', '--token', 't'], /either --api-key or --token/],
    ['results without -o', ['results', 'batch_x'], /results needs -o FILE/],
    [
      '-o in a missing directory',
      ['results', 'batch_x', '-o', join(dir, 'missing', 'out.jsonl')],
      /-o .*out\.jsonl: cannot write it \(no directory/,
    ],
    [
      '-o a directory',
      ['results', 'batch_x', '-o', join(dir, 'a-directory')],
      /cannot write it \(it is a directory\)/,
    ],
    [
      '--errors in a missing directory',
      ['results', 'batch_x', '-o', join(dir, 'out.jsonl'), '--errors', join(dir, 'missing', 'e.jsonl')],
      /--errors .*: cannot write it/,
    ],
    ['a missing FILE', ['submit', join(dir, 'absent.jsonl')], /cannot read .*absent\.jsonl: no such file/],
    ['a directory as FILE', ['submit', join(dir, 'a-directory')], /a-directory is a directory/],
    ['an empty FILE', ['submit', file('empty.jsonl', '\n\n')], /has no input lines/],
    [
      'lines that are not JSON objects',
      ['submit', file('bad.jsonl', '{"id":"a","text":"x"}\nnot json\n[1, 2]\n')],
      /nothing was submitted:\n\s+line 2: not JSON[^\n]*\n\s+line 3: not a JSON object/,
    ],
    [
      'a FILE that is not UTF-8',
      ['submit', file('binary.jsonl', Buffer.from([0x7b, 0xff, 0xfe, 0x7d]))],
      /not UTF-8/,
    ],
  ];
  it.each(cases)('%s: exit 2 naming the problem, no stack trace', async (_what, args, message, env) => {
    const result = await batch(args, env);
    expect(result.code, result.stderr).toBe(2);
    expect(result.stderr).toMatch(/^mcp-cluster batch: /);
    expect(result.stderr).toMatch(message);
    expect(result.stderr).not.toMatch(STACK_TRACE);
    expect(result.stdout).toBe('');
  });

  it('prints the usage for --help, exit 0', async () => {
    const result = await batch(['--help']);
    expect(result.code).toBe(0);
    expect(result.stdout).toContain('mcp-cluster batch submit FILE');
  });

  it('exits 1 naming the URL when no cluster answers there', async () => {
    const closed = `http://127.0.0.1:${await freePort()}`;
    for (const args of [
      ['list', '--url', closed],
      ['submit', good, '--wait', '--url', closed],
    ]) {
      const result = await batch(args);
      expect(result.code, result.stderr).toBe(1);
      expect(result.stderr).toContain(`cannot reach the cluster at ${closed}`);
      expect(result.stderr).toContain('--url');
      expect(result.stderr).not.toMatch(STACK_TRACE);
    }
    // The environment names the cluster when --url does not.
    const viaEnv = await batch(['list'], { MCP_CLUSTER_URL: `${closed}/mcp` });
    expect(viaEnv.code).toBe(1);
    expect(viaEnv.stderr).toContain(`cannot reach the cluster at ${closed}`);
  });
});

/** `mcp-cluster up` on `configPath`, with the base URL its banner gives (its MCP URL minus `/mcp`). */
async function startUp(configPath: string) {
  const up = await startUpProcess(['--config', configPath]);
  return { ...up, url: up.mcpUrl.replace(/\/mcp$/, '') };
}

// `mcp-cluster up` with API keys of two tenants: a pool on its own simulated backend, and a slow
// pool on a separate simulator (one second per request, four texts each) for jobs that take a while.
describe('mcp-cluster batch against a running mcp-cluster up', () => {
  let up: Awaited<ReturnType<typeof startUp>>;
  let slowSim: RoleProcess;
  const acme = createApiKey({ tenant: 'acme', scopes: [] });
  const globex = createApiKey({ tenant: 'globex', scopes: [] });
  /** The cluster and acme's key, as flags. */
  let flags: string[] = [];

  beforeAll(async () => {
    slowSim = await startRole('slow-sim', ['sim', '--port', '0', '--embed-fixed-ms', '1000']);
    const keysFile = file(
      'keys.yaml',
      `keys:\n${keysFileEntry(acme.entry)}\n${keysFileEntry(globex.entry)}\n`,
    );
    const config = file(
      'cluster.yaml',
      `
cluster: { namespace: batch-cli }
auth:
  mode: api-keys
  tenants: [acme, globex]
  apiKeys: { file: "${keysFile}" }
batch: { chunkSize: 4 }
pools:
  embeddings: { backend: openai-embeddings }
  slow: { backend: openai-embeddings, endpoints: [{ url: "${String(slowSim.ready.url)}", maxConcurrency: 1 }] }
tools:
  - { name: embed, template: embed, pool: embeddings, model: sim-embed }
  - { name: embed_slow, template: embed, pool: slow, model: sim-embed, batch: { maxSize: 4 }, cache: { enabled: false } }
`,
    );
    up = await startUp(config);
    flags = ['--url', up.url, '--api-key', acme.key];
  });

  afterAll(async () => {
    await up?.stop();
    await slowSim?.stop();
  });

  it('submit --wait: plain progress lines off a terminal, the summary, exit 0; results in input order', async () => {
    const input = ids(40, 'doc');
    const submitted = await batch(['submit', file('docs.jsonl', plain(input)), '--wait', ...flags]);
    expect(submitted.code, submitted.stderr).toBe(0);
    // Not a terminal: whole lines, never a carriage return; the final one says completed.
    expect(submitted.stderr).not.toContain('\r');
    const lines = submitted.stderr.trim().split('\n');
    expect(lines.at(-1)).toMatch(
      /^batch_\S+ {2}completed {2}40\/40 rows {2}100\.0% {2}.* rows\/s {2}ETA 0s {2}failed 0$/,
    );
    const [, id] = /^(batch_\S+) completed: 40\/40 rows done, 0 failed/.exec(submitted.stdout) ?? [];
    expect(id, submitted.stdout).toBeDefined();
    expect(submitted.stdout).toContain(`mcp-cluster batch results ${id} -o FILE`);

    const out = join(dir, 'docs.out.jsonl');
    const errors = join(dir, 'docs.err.jsonl');
    const results = await batch(['results', String(id), '-o', out, '--errors', errors, ...flags]);
    expect(results.code, results.stderr).toBe(0);
    expect(results.stdout).toContain(`wrote 40 output rows to ${out}`);
    expect(results.stdout).toContain(`wrote 0 error rows to ${errors}`);
    const rows = readFileSync(out, 'utf8')
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as { id: string; embedding: number[] });
    expect(rows.map((r) => r.id)).toEqual(input);
    expect(rows.every((r) => r.embedding.length > 0)).toBe(true);
    expect(readFileSync(errors, 'utf8')).toBe('');
  });

  it('--json prints JSON only on stdout: submit, status, list, cancel and results', async () => {
    const path = file('json.jsonl', plain(ids(8, 'json')));
    const waited = await batch(['submit', path, '--wait', '--json', ...flags]);
    expect(waited.code, waited.stderr).toBe(0);
    const done = JSON.parse(waited.stdout) as BatchObject;
    expect(done).toMatchObject({
      object: 'batch',
      status: 'completed',
      request_counts: { total: 8, completed: 8 },
    });

    const submitted = await batch(['submit', path, '--json', ...flags]);
    expect(submitted.code, submitted.stderr).toBe(0);
    const created = JSON.parse(submitted.stdout) as BatchObject;
    expect(created.id).toMatch(/^batch_/);

    const status = await batch(['status', created.id, '--json', ...flags]);
    expect((JSON.parse(status.stdout) as BatchObject).id).toBe(created.id);
    const list = await batch(['list', '--json', ...flags]);
    const page = JSON.parse(list.stdout) as { object: string; data: BatchObject[] };
    expect(page.object).toBe('list');
    expect(page.data.map((b) => b.id)).toEqual(expect.arrayContaining([done.id, created.id]));
    const cancelled = await batch(['cancel', done.id, '--json', ...flags]);
    expect((JSON.parse(cancelled.stdout) as BatchObject).status).toBe('completed');
    const results = await batch(['results', done.id, '-o', join(dir, 'json.out.jsonl'), '--json', ...flags]);
    expect(JSON.parse(results.stdout)).toMatchObject({ output: { rows: 8 } });
  });

  it('status and list for people; the environment carries the URL and the key', async () => {
    const env = { MCP_CLUSTER_URL: `${up.url}/mcp`, MCP_CLUSTER_API_KEY: acme.key };
    const submitted = await batch(['submit', file('human.jsonl', plain(ids(4, 'human')))], env);
    expect(submitted.code, submitted.stderr).toBe(0);
    const [, id] = /^(batch_\S+) in_progress: 4 rows from /.exec(submitted.stdout) ?? [];
    expect(id, submitted.stdout).toBeDefined();
    expect(submitted.stdout).toContain(`mcp-cluster batch status ${id}`);
    await waitFor('completed', async () =>
      (await batch(['status', String(id)], env)).stdout.includes('completed'),
    );
    const status = await batch(['status', String(id)], env);
    expect(status.stdout).toMatch(/^id: +batch_/m);
    expect(status.stdout).toMatch(/^rows: +4\/4 done \(100\.0%\), 0 failed$/m);
    expect(status.stdout).toMatch(/^output file: +file-out-/m);
    const list = await batch(['list'], env);
    expect(list.code).toBe(0);
    expect(list.stdout).toMatch(/^ID +STATUS +DONE\/TOTAL +FAILED +CREATED$/m);
    expect(list.stdout).toMatch(new RegExp(`^${id} +completed +4/4 +0 +\\d{4}-`, 'm'));
    // A bearer token travels the same way (here the API key, which is one).
    const withToken = await batch(['status', String(id), '--url', up.url, '--token', acme.key]);
    expect(withToken.code, withToken.stderr).toBe(0);
  });

  it('submit --wait exits 1 when the job is cancelled meanwhile; the rows done are kept', async () => {
    const path = file('slow.jsonl', plain(ids(40, 'slow')));
    const waiting = batch(['submit', path, '--pool', 'slow', '--wait', ...flags]);
    const running = await waitFor(
      'a slow job with rows done',
      async () => {
        const list = await batch(['list', '--json', ...flags]);
        const page = JSON.parse(list.stdout || '{"data":[]}') as { data: BatchObject[] };
        return page.data.find((b) => b.status === 'in_progress' && b.request_counts.total === 40);
      },
      20_000,
    );
    const cancel = await batch(['cancel', running.id, ...flags]);
    expect(cancel.code, cancel.stderr).toBe(0);
    expect(cancel.stdout).toMatch(
      new RegExp(`^${running.id} (cancelling|cancelled): \\d+ rows done and kept`),
    );
    const result = await waiting;
    expect(result.code, result.stderr).toBe(1);
    expect(result.stdout).toMatch(new RegExp(`^${running.id} cancelled: \\d+/40 rows done`));
    expect(result.stderr).toMatch(/in_progress {2}\d+\/40 rows/);
    expect(result.stderr).toMatch(/cancelled {2}\d+\/40 rows/);
  }, 60_000);

  it('exit 2 for a file the cluster refuses by line and for an unknown --pool; exit 1 for the rest', async () => {
    const duplicate = await batch([
      'submit',
      file('dup.jsonl', '{"id":"a","text":"x"}\n{"id":"a","text":"y"}\n{"text":"no id"}\n'),
      ...flags,
    ]);
    expect(duplicate.code, duplicate.stderr).toBe(2);
    expect(duplicate.stderr).toMatch(/dup\.jsonl: the input has 2 bad lines/);
    expect(duplicate.stderr).toContain('line 2: id "a" appears twice');
    expect(duplicate.stderr).toMatch(/line 3: id must be a non-empty string/);

    const pool = await batch(['submit', file('ok.jsonl', plain(['ok'])), '--pool', 'nope', ...flags]);
    expect(pool.code, pool.stderr).toBe(2);
    expect(pool.stderr).toContain('--pool: pool "nope" serves no embed tool');

    const unknown = await batch(['status', 'batch_AAAAAAAAAAAAAAAAAAAAAA', ...flags]);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toContain("unknown here, or not your tenant's");

    // Another tenant's job is unknown to globex.
    const mine = JSON.parse(
      (await batch(['submit', file('mine.jsonl', plain(['m'])), '--json', ...flags])).stdout,
    ) as BatchObject;
    const theirs = await batch(['status', mine.id, '--url', up.url, '--api-key', globex.key]);
    expect(theirs.code).toBe(1);
    expect(theirs.stderr).toContain("unknown here, or not your tenant's");

    for (const credential of [[], ['--api-key', 'mcpk_not-a-real-key']]) {
      const refused = await batch(['list', '--url', up.url, ...credential]);
      expect(refused.code).toBe(1);
      expect(refused.stderr).toMatch(/the cluster refused the credential \(401/);
      expect(refused.stderr).toContain('--api-key');
      expect(refused.stderr).not.toMatch(STACK_TRACE);
    }
  });

  it.skipIf(!findOnPath('script'))(
    'on a terminal: one line redrawn with \\r, with a bar, rate, ETA and failed count',
    async () => {
      const path = file('tty.jsonl', plain(ids(12, 'tty')));
      const command = [CLI, 'batch', 'submit', path, '--pool', 'slow', '--wait', ...flags]
        .map((a) => `'${a.replace(/'/g, "'\\''")}'`)
        .join(' ');
      const transcript = join(dir, 'tty.log');
      const result = await new Promise<number | null>((resolve) => {
        const child = spawn('script', ['-qec', `${process.execPath} ${command}`, transcript], {
          env: cleanEnv(),
          stdio: 'ignore',
        });
        trackChild(child);
        child.once('exit', (code) => resolve(code));
      });
      expect(result).toBe(0);
      const text = readFileSync(transcript, 'utf8');
      const frames = text.split('\r').filter((f) => f.includes(' rows/s'));
      expect(frames.length).toBeGreaterThan(2);
      expect(frames.at(-1)).toMatch(/completed {2}\[#{20}\] {2}12\/12 rows {2}100\.0%/);
      expect(
        frames.some((f) =>
          /in_progress {2}\[[#.]{20}\] {2}\d+\/12 rows .* ETA (\d+s|--) {2}failed 0/.test(f),
        ),
      ).toBe(true);
    },
    60_000,
  );
});

describe('the progress view', () => {
  const job = (status: string, completed: number, failed = 0): BatchObject => ({
    id: 'batch_x',
    status,
    errors: null,
    input_file_id: null,
    output_file_id: null,
    error_file_id: null,
    created_at: 0,
    expires_at: 0,
    completed_at: null,
    request_counts: { total: 1000, completed, failed },
    metadata: null,
  });

  it('on a terminal redraws one line at most four times a second, with rate and ETA', () => {
    let now = 0;
    const out: string[] = [];
    const view = new ProgressView(
      (t) => out.push(t),
      true,
      () => now,
      () => 200,
    );
    for (let i = 0; i <= 40; i++) {
      now = i * 100;
      view.update(job('in_progress', i * 10));
    }
    view.update(job('completed', 999, 1));
    view.end();
    // 4 s of updates every 100 ms: a redraw every 250 ms at most, plus the final state.
    expect(out.length).toBeLessThanOrEqual(4 * 4 + 1 + 2);
    expect(out.length).toBeGreaterThanOrEqual(10);
    expect(out.slice(0, -1).every((t) => t.startsWith('\r') && t.endsWith('\x1b[K'))).toBe(true);
    expect(out.at(-1)).toBe('\n');
    const mid = out.find((t) => t.includes('300/1000')) ?? '';
    expect(mid).toMatch(/\[######\.+\] {2}300\/1000 rows {2}30\.0% {2}100 rows\/s {2}ETA 7s {2}failed 0/);
    expect(out.at(-2)).toMatch(/completed {2}\[#{20}\] {2}1000\/1000 rows {2}100\.0% .* ETA 0s {2}failed 1/);
  });

  it('keeps the numbers on a narrow terminal: the bar goes first, then the id', () => {
    const drawn = (columns: number) => {
      const out: string[] = [];
      new ProgressView(
        (t) => out.push(t),
        true,
        () => 0,
        () => columns,
      ).update(job('in_progress', 298, 2));
      return out[0];
    };
    expect(drawn(80)).toBe('\rbatch_x  in_progress  300/1000 rows  30.0%  -- rows/s  ETA --  failed 2\x1b[K');
    expect(drawn(66)).toBe('\rin_progress  300/1000 rows  30.0%  -- rows/s  ETA --  failed 2\x1b[K');
    expect(drawn(58)).toBe('\rin_progress 300/1000 rows 30.0% -- rows/s ETA -- failed 2\x1b[K');
  });

  it('off a terminal writes a line per state change and at most one every five seconds', () => {
    let now = 0;
    const out: string[] = [];
    const view = new ProgressView(
      (t) => out.push(t),
      false,
      () => now,
    );
    view.update(job('validating', 0));
    for (let i = 1; i <= 120; i++) {
      now = i * 100;
      view.update(job('in_progress', i * 5));
    }
    view.update(job('finalizing', 1000));
    view.update(job('completed', 1000));
    view.end();
    // validating, in_progress (a change), then one at 5 s and 10 s, finalizing, completed.
    expect(out.map((l) => l.split('  ')[1])).toEqual([
      'validating',
      'in_progress',
      'in_progress',
      'in_progress',
      'finalizing',
      'completed',
    ]);
    expect(out.every((l) => l.endsWith('\n') && !l.includes('\r') && !l.includes('['))).toBe(true);
  });
});
