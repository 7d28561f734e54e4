import { execFile } from 'node:child_process';
import { accessSync, constants, existsSync, readFileSync, statSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseKeysFile } from '../services/ingress/index.js';
import {
  CLI,
  type CliResult,
  cleanEnv,
  type RoleProcess,
  runCli,
  STACK_TRACE,
  startRole,
  writeConfig,
} from './support/processes.js';

// These tests run the built CLI (`npm test` builds it first) as a child process and check what a
// person sees: the exit code (0 done, 1 failure, 2 bad configuration or usage), stdout and stderr.

function expectUserError(result: CliResult, ...mentions: (string | RegExp)[]): void {
  expect(result.code, `stderr: ${result.stderr}`).toBe(2);
  // The message may follow JSON log lines (e.g. the ingress's warnings at start).
  expect(result.stderr).toMatch(/^mcp-cluster: /m);
  for (const mention of mentions) {
    if (typeof mention === 'string') expect(result.stderr).toContain(mention);
    else expect(result.stderr).toMatch(mention);
  }
  expect(result.stderr).not.toMatch(STACK_TRACE);
  expect(result.stdout).toBe('');
}

interface CheckedConfig {
  ok: boolean;
  broker: string;
  namespace: string;
  pools: Record<string, { backend: string; endpoints: string[] }>;
  tools: { name: string; pool: string; model: string; deadlineMs: number }[];
}

const CUSTOM_YAML = `
cluster:
  namespace: team-a
broker:
  url: nats://10.1.2.3:4222
pools:
  gpu:
    backend: openai-chat
    endpoints:
      - { url: http://vllm-0:8000, maxConcurrency: 8 }
      - { url: http://vllm-1:8000 }
  vectors:
    backend: openai-embeddings
    endpoints: [{ url: http://tei-0:8080 }]
tools:
  - { name: chat, template: generate_text, pool: gpu, model: llama-3, deadline: 90s }
  - { name: embed_docs, template: embed, pool: vectors, model: bge-m3, deadline: 2m }
`;

beforeAll(() => {
  if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run \`npm run build\` first (npm test does)`);
});

describe('mcp-cluster usage', () => {
  it.each([['--help'], ['-h'], ['help']])('%s prints the usage and exits 0', async (flag) => {
    const result = await runCli([flag]);
    expect(result.code).toBe(0);
    expect(result.stdout).toContain('Usage:');
    for (const command of ['up', 'ingress', 'worker --pool NAME', 'sim', 'config check']) {
      expect(result.stdout).toContain(`mcp-cluster ${command}`);
    }
    expect(result.stderr).toBe('');
  });

  it.each([
    ['up', '--help'],
    ['ingress', '--help'],
    ['worker', '-h'],
    ['sim', '--help'],
    ['config', 'check', '--help'],
    ['config', '--help'],
  ])('%s %s prints the usage and exits 0 without starting anything', async (...args) => {
    const result = await runCli(args);
    expect(result.code).toBe(0);
    expect(result.stdout).toContain('Usage:');
    expect(result.stdout).not.toContain('"ok"');
  });

  it('no arguments prints the usage and exits 2', async () => {
    const result = await runCli([]);
    expect(result.code).toBe(2);
    expect(result.stdout).toContain('Usage:');
  });

  it('an unknown command exits 2 naming it', async () => {
    const result = await runCli(['frobnicate']);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('unknown command "frobnicate"');
    expect(result.stderr).toContain('Usage:');
    expect(result.stdout).toBe('');
  });

  it('`config` without `check` exits 2 with its usage', async () => {
    const result = await runCli(['config']);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('mcp-cluster config check');
  });
});

describe('mcp-cluster config check', () => {
  it('without a file prints the defaults as JSON', async () => {
    const result = await runCli(['config', 'check']);
    expect(result.code, result.stderr).toBe(0);
    const out = JSON.parse(result.stdout) as CheckedConfig;
    expect(out.ok).toBe(true);
    expect(out.broker).toBe('memory:');
    expect(out.namespace).toBe('mcp');
    expect(out.pools).toEqual({
      inference: { backend: 'openai-chat', endpoints: [] },
      embeddings: { backend: 'openai-embeddings', endpoints: [] },
      diffusion: { backend: 'comfyui', endpoints: [] },
    });
    expect(out.tools).toEqual([
      { name: 'generate_text', pool: 'inference', model: 'sim-llm', deadlineMs: 120_000 },
      { name: 'chat', pool: 'inference', model: 'sim-llm', deadlineMs: 120_000 },
      { name: 'summarize', pool: 'inference', model: 'sim-llm', deadlineMs: 120_000 },
      { name: 'embed', pool: 'embeddings', model: 'sim-embed', deadlineMs: 60_000 },
      { name: 'generate_image', pool: 'diffusion', model: 'sim-diffusion', deadlineMs: 300_000 },
    ]);
  });

  it('with a valid file prints its broker, pools and tools', async () => {
    const result = await runCli(['config', 'check', '--config', writeConfig(CUSTOM_YAML)]);
    expect(result.code, result.stderr).toBe(0);
    const out = JSON.parse(result.stdout) as CheckedConfig;
    expect(out).toEqual({
      ok: true,
      broker: 'nats://10.1.2.3:4222',
      namespace: 'team-a',
      pools: {
        gpu: { backend: 'openai-chat', endpoints: ['http://vllm-0:8000', 'http://vllm-1:8000'] },
        vectors: { backend: 'openai-embeddings', endpoints: ['http://tei-0:8080'] },
      },
      tools: [
        { name: 'chat', pool: 'gpu', model: 'llama-3', deadlineMs: 90_000 },
        { name: 'embed_docs', pool: 'vectors', model: 'bge-m3', deadlineMs: 120_000 },
      ],
    });
  });

  it('reads the file named by MCP_CLUSTER_CONFIG when --config is absent', async () => {
    const result = await runCli(['config', 'check'], { MCP_CLUSTER_CONFIG: writeConfig(CUSTOM_YAML) });
    expect(result.code, result.stderr).toBe(0);
    expect((JSON.parse(result.stdout) as CheckedConfig).namespace).toBe('team-a');
  });

  it('environment variables override the file', async () => {
    const result = await runCli(['config', 'check', '--config', writeConfig(CUSTOM_YAML)], {
      MCP_CLUSTER_BROKER_URL: 'redis://127.0.0.1:6390/2',
      MCP_CLUSTER_BACKENDS_GPU: 'http://a:8000,http://b:8000',
    });
    expect(result.code, result.stderr).toBe(0);
    const out = JSON.parse(result.stdout) as CheckedConfig;
    expect(out.broker).toBe('redis://127.0.0.1:6390/2');
    expect(out.pools.gpu?.endpoints).toEqual(['http://a:8000', 'http://b:8000']);
  });

  it('a file that is not YAML exits 2 naming the file and the line', async () => {
    const path = writeConfig('ingress:\n  port: [3000\n');
    const result = await runCli(['config', 'check', '--config', path]);
    expectUserError(result, 'INVALID_CONFIG', path, 'not valid YAML', 'line');
  });

  it('a value of the wrong type exits 2 naming the setting and the value found', async () => {
    const result = await runCli(['config', 'check', '--config', writeConfig('ingress: { port: "abc" }\n')]);
    expectUserError(result, 'ingress.port', '"abc"');
  });

  it('a bad duration exits 2 naming the setting and the value found', async () => {
    const result = await runCli(['config', 'check', '--config', writeConfig('worker: { ackWait: soon }\n')]);
    expectUserError(result, 'worker.ackWait', 'soon');
  });

  it('a tool naming a missing pool exits 2 naming the tool setting and the pools there are', async () => {
    const yaml = 'tools:\n  - { name: chat, template: generate_text, pool: nope, model: m }\n';
    const result = await runCli(['config', 'check', '--config', writeConfig(yaml)]);
    expectUserError(result, 'tools.0.pool', '"nope"', 'inference, embeddings');
  });

  it('an unknown key exits 2 naming where it is and the key', async () => {
    const result = await runCli(['config', 'check', '--config', writeConfig('ingress: { prot: 3000 }\n')]);
    expectUserError(result, 'ingress:', '"prot"');
    const top = await runCli(['config', 'check', '--config', writeConfig('brokers: { url: "memory:" }\n')]);
    expectUserError(top, '"brokers"');
  });

  it('every offending setting is named, not only the first', async () => {
    const yaml = 'ingress: { port: 99999 }\nworker: { maxDeliveries: 0 }\n';
    const result = await runCli(['config', 'check', '--config', writeConfig(yaml)]);
    expectUserError(result, 'ingress.port', '99999', 'worker.maxDeliveries');
  });

  it('a file that does not exist exits 2 saying it cannot be read', async () => {
    const path = join(dirname(writeConfig('')), 'missing.yaml');
    const result = await runCli(['config', 'check', '--config', path]);
    expectUserError(result, 'cannot read config file', path);
  });

  it('MCP_CLUSTER_BROKER_URL with an unknown scheme exits 2 naming broker.url', async () => {
    const result = await runCli(['config', 'check'], { MCP_CLUSTER_BROKER_URL: 'amqp://127.0.0.1:5672' });
    expectUserError(result, 'broker.url', 'amqp://127.0.0.1:5672');
  });

  it('a stray argument (a file given without --config) exits 2 instead of checking the defaults', async () => {
    const path = writeConfig(CUSTOM_YAML);
    const result = await runCli(['config', 'check', path]);
    expectUserError(result, path, '--help');
  });
});

describe('mcp-cluster flags', () => {
  it.each([
    [['up', '--bogus'], '--bogus'],
    [['ingress', '--brokr', 'memory:'], '--brokr'],
    [['worker', '--pool', 'inference', '--verbose'], '--verbose'],
    [['config', 'check', '--file', 'x.yaml'], '--file'],
  ])('%j: an unknown flag exits 2 naming it', async (args, flag) => {
    const result = await runCli(args);
    expectUserError(result, `Unknown option '${flag}'`, 'mcp-cluster --help');
    // Nothing suggests passing it as a positional argument: no command takes one.
    expect(result.stderr).not.toContain('positional argument starting with');
  });

  it.each([
    [['ingress', '--port'], '--port'],
    [['ingress', '--config'], '--config'],
    [['worker', '--pool'], '--pool'],
  ])('%j: a flag without its value exits 2 naming it', async (args, flag) => {
    const result = await runCli(args);
    expectUserError(result, `'${flag} <value>' argument missing`);
  });

  it('a stray argument to a role exits 2 naming it', async () => {
    const result = await runCli(['ingress', '3000']);
    expectUserError(result, "'3000'");
  });

  it.each([
    [['ingress'], 'abc'],
    [['ingress'], '70000'],
    [['ingress'], '3.5'],
    [['up'], 'abc'],
    [['up'], '70000'],
    [['worker', '--pool', 'inference'], 'abc'],
    [['worker', '--pool', 'inference'], '70000'],
  ])('%j --port %s exits 2 naming --port', async (args, value) => {
    const result = await runCli([...args, '--port', value]);
    expectUserError(result, '--port', `"${value}"`, '0-65535');
  });

  it('ingress --delivery-port abc exits 2 naming --delivery-port', async () => {
    const result = await runCli(['ingress', '--delivery-port', 'abc']);
    expectUserError(result, '--delivery-port', '"abc"');
  });

  it('worker without --pool exits 2 asking for --pool', async () => {
    const result = await runCli(['worker']);
    expectUserError(result, '--pool NAME');
  });

  it('worker --pool nosuch exits 2 naming the pool and listing the configured pools', async () => {
    const defaults = await runCli(['worker', '--pool', 'nosuch']);
    expectUserError(defaults, '"nosuch"', 'inference, embeddings');
    const custom = await runCli(['worker', '--pool', 'nosuch', '--config', writeConfig(CUSTOM_YAML)]);
    expectUserError(custom, '"nosuch"', 'gpu, vectors');
  });

  it('a role with an invalid configuration file exits 2 before connecting to anything', async () => {
    const path = writeConfig('ingress: { port: "abc" }\n');
    const result = await runCli(['ingress', '--config', path, '--broker', 'nats://127.0.0.1:1']);
    expectUserError(result, 'ingress.port', '"abc"');
  });

  it('sim --bogus 1 exits 2 naming the flag', async () => {
    const result = await runCli(['sim', '--bogus', '1']);
    expectUserError(result, '--bogus', '--ttft-ms');
  });

  it('sim --ttft-ms abc exits 2 naming the flag and the value', async () => {
    const result = await runCli(['sim', '--ttft-ms', 'abc']);
    expectUserError(result, '--ttft-ms', '"abc"');
  });
});

describe('mcp-cluster keys create', () => {
  it('prints a key once and the keys-file entry that admits it', async () => {
    const result = await runCli([
      'keys',
      'create',
      '--tenant',
      'acme',
      '--scopes',
      'mcp, pool:embeddings',
      '--expires',
      '12h',
    ]);
    expect(result.code, result.stderr).toBe(0);
    const key = /^ {2}(mcpk_[0-9a-f]{12}_[A-Za-z0-9_-]{43})$/m.exec(result.stdout)?.[1] ?? '';
    expect(key).not.toBe('');
    expect(result.stdout.split(key)).toHaveLength(2);
    const entryText = result.stdout
      .split('\n')
      .filter(
        (line, i, lines) => i >= lines.findIndex((l) => l.startsWith('  - id: ')) && line.startsWith('  '),
      )
      .filter((line) => !line.includes('mcpk_'))
      .map((line) => line.slice(2))
      .join('\n');
    const entry = [...parseKeysFile(`keys:\n${entryText}\n`, 'printed entry').values()][0];
    expect(entry).toMatchObject({ tenant: 'acme', scopes: ['mcp', 'pool:embeddings'], id: key.slice(5, 17) });
    const hours = (Date.parse(entry?.expires ?? '') - Date.now()) / 3_600_000;
    expect(hours).toBeGreaterThan(11.9);
    expect(hours).toBeLessThanOrEqual(12);
  });

  it.each([
    [['keys', 'create'], '--tenant'],
    [['keys', 'create', '--tenant', 'a b'], '"a b"'],
    [['keys', 'create', '--tenant', 'x'.repeat(65)], '--tenant'],
    [['keys', 'create', '--tenant', 'a', '--expires', '5y'], '--expires'],
    [['keys', 'create', '--tenant', 'a', '--expires', '0d'], '--expires'],
    [['keys', 'create', '--tenant', 'a', '--expires', '99999d'], '--expires'],
    [['keys', 'create', '--tenant', 'a', '--scopes', 'ok,"quoted"'], '--scopes'],
    [['keys', 'create', '--tenant', 'a', '--bogus'], '--bogus'],
    [['keys', 'list'], 'keys create'],
    [['keys'], 'keys create'],
  ])('%j exits 2 naming %s, printing no key', async (args, mention) => {
    const result = await runCli(args);
    expectUserError(result, mention);
    expect(result.stdout).not.toContain('mcpk_');
  });
});

describe('mcp-cluster roles that cannot start', () => {
  it.each([
    ['nats://127.0.0.1:1', 'NATS'],
    ['redis://127.0.0.1:1', 'Redis'],
  ])('ingress --broker %s (nothing listening) exits 1 with QUEUE_UNAVAILABLE', async (url, kind) => {
    const result = await runCli(['ingress', '--port', '0', '--broker', url], {}, 20_000);
    expect(result.signal, 'still running after 20 s').toBeNull();
    expect(result.code, result.stderr).toBe(1);
    expect(result.stderr).toContain(`mcp-cluster: QUEUE_UNAVAILABLE: cannot connect to ${kind} at ${url}`);
    expect(result.stderr).not.toMatch(STACK_TRACE);
    expect(result.stdout).toBe('');
  });

  it('worker --broker nats://127.0.0.1:1 exits 1 with QUEUE_UNAVAILABLE', async () => {
    const result = await runCli(
      ['worker', '--pool', 'inference', '--port', '0', '--broker', 'nats://127.0.0.1:1'],
      {
        MCP_CLUSTER_BACKENDS_INFERENCE: 'http://127.0.0.1:9',
      },
    );
    expect(result.signal, 'still running after 20 s').toBeNull();
    expect(result.code, result.stderr).toBe(1);
    expect(result.stderr).toContain('QUEUE_UNAVAILABLE');
    expect(result.stderr).not.toMatch(STACK_TRACE);
  });

  describe('on a port that is taken', () => {
    let blocker: Server;
    let port = 0;
    beforeAll(async () => {
      blocker = createServer();
      await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
      port = (blocker.address() as { port: number }).port;
    });
    afterAll(async () => {
      await new Promise<void>((resolve) => blocker.close(() => resolve()));
    });

    it.each([
      [['ingress', '--broker', 'memory:']],
      [['sim']],
      [['worker', '--pool', 'inference', '--broker', 'memory:']],
    ])('%j --port <taken> exits 2 naming the address, no stack trace', async (args) => {
      const result = await runCli([...args, '--port', String(port)], {
        MCP_CLUSTER_BACKENDS_INFERENCE: 'http://127.0.0.1:9',
      });
      expectUserError(result, `127.0.0.1:${port}`, /address already in use|EADDRINUSE/);
    });
  });
});

describe('mcp-cluster roles without a broker', () => {
  it.each([[['ingress', '--port', '0']], [['worker', '--pool', 'inference', '--port', '0']]])(
    '%j with no broker configured exits 2 naming --broker and MCP_CLUSTER_BROKER_URL, before serving',
    async (args) => {
      const result = await runCli(args, { MCP_CLUSTER_BACKENDS_INFERENCE: 'http://127.0.0.1:9' });
      expectUserError(result, 'INVALID_CONFIG', '--broker', 'MCP_CLUSTER_BROKER_URL', 'mcp-cluster up');
    },
  );

  it('a configuration file without broker.url is no broker either', async () => {
    const path = writeConfig('ingress: { drainGrace: 5s }\n');
    const result = await runCli(['ingress', '--port', '0', '--config', path]);
    expectUserError(result, '--broker', 'MCP_CLUSTER_BROKER_URL');
  });

  it('MCP_CLUSTER_BROKER_URL counts as configured (the role then connects to it)', async () => {
    const result = await runCli(['ingress', '--port', '0'], { MCP_CLUSTER_BROKER_URL: 'nats://127.0.0.1:1' });
    expect(result.code, result.stderr).toBe(1);
    expect(result.stderr).toContain('QUEUE_UNAVAILABLE');
  });
});

describe('the mcp-cluster bin', () => {
  const root = resolve(dirname(CLI), '../../..');
  const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as {
    bin: Record<string, string>;
    scripts: Record<string, string>;
  };

  it('is the built CLI, executable, and runs by itself through its #! line', async () => {
    expect(resolve(root, pkg.bin['mcp-cluster'] ?? '')).toBe(CLI);
    // npx runs the bin through a link it made once: the file itself must carry the mode.
    expect(statSync(CLI).mode & 0o111, `${CLI} is not executable`).not.toBe(0);
    expect(() => accessSync(CLI, constants.X_OK)).not.toThrow();
    const out = await new Promise<{ code: number; stdout: string }>((done) => {
      execFile(CLI, ['--help'], { env: cleanEnv(), timeout: 30_000 }, (err, stdout) =>
        done({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout: String(stdout) }),
      );
    });
    expect(out.code).toBe(0);
    expect(out.stdout).toContain('Usage:');
  });

  it('is built by npm ci in a checkout (prepare), so npx finds it on a clean clone', () => {
    expect(pkg.scripts.prepare).toContain('npm run build');
    expect(pkg.scripts.build).toMatch(/chmod \+x dist\/services\/cli\/main\.js/);
  });
});

describe('mcp-cluster ingress (running)', () => {
  let role: RoleProcess | undefined;
  afterAll(async () => {
    await role?.kill();
  });

  it('prints its ready line, serves /healthz and exits 0 on SIGTERM', async () => {
    const config = writeConfig('broker: { url: "memory:" }\ningress: { drainGrace: 5s }\n');
    // Blank (ignored) overrides, so that a broker or port set on the test machine cannot leak in.
    const blank = Object.fromEntries(
      Object.keys(process.env)
        .filter((key) => key.startsWith('MCP_CLUSTER_') && key !== 'MCP_CLUSTER_LOG_LEVEL')
        .map((key) => [key, '']),
    );
    role = await startRole('ingress', ['ingress', '--port', '0', '--config', config], blank);
    const ready = role.ready;
    expect(ready.role).toBe('ingress');
    expect(ready.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/mcp$/);
    expect(ready.url).not.toMatch(/:0\/mcp$/);
    expect(ready.delivery).toMatch(/^127\.0\.0\.1:\d+$/);

    const health = await fetch(String(ready.url).replace(/\/mcp$/, '/healthz'), {
      signal: AbortSignal.timeout(10_000),
    });
    expect(health.status).toBe(200);
    await health.body?.cancel();

    const { child } = role;
    // stop() sends SIGTERM, and SIGKILL only if the process is still there after 15 s.
    await role.stop(15_000);
    expect(child.signalCode, role.logs()).toBeNull();
    expect(child.exitCode, role.logs()).toBe(0);
    expect(role.logs()).not.toMatch(STACK_TRACE);
  });
});
