import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { freePort } from './support/brokers.js';
import { callTool2025 } from './support/mcp-clients.js';
import { CLI, cleanEnv, startUp } from './support/processes.js';
import { waitFor } from './support/wait.js';

// The commands the docs show, run as written, so a command copied from the docs works: the quick
// start (README), a cluster on NATS with every role its own process (docs/running.md), and
// `mcp-cluster plan` (docs/autoscaling.md). Each block is found by its `<!-- doc-test: NAME -->`
// marker. Only what cannot run here is swapped: fixed ports for free ones, `/tmp` paths for a
// temporary directory, `mcp-cluster` for the built CLI (`npx mcp-cluster` runs the same file).

const ROOT = fileURLToPath(new URL('../', import.meta.url));

/** The fenced block after `<!-- doc-test: name -->` in `page` (relative to the repository). */
function docBlock(page: string, name: string): string {
  const text = readFileSync(join(ROOT, page), 'utf8');
  const block = new RegExp(`<!-- doc-test: ${name} -->\\n\`\`\`\\w*\\n([\\s\\S]*?)\`\`\``).exec(text)?.[1];
  if (block === undefined) throw new Error(`${page} has no block marked doc-test: ${name}`);
  return block;
}

const children: ChildProcess[] = [];
const dirs: string[] = [];
afterEach(async () => {
  for (const child of children.splice(0)) {
    // The shell and everything it started: they share the process group it leads.
    if (child.pid !== undefined && child.exitCode === null) {
      try {
        process.kill(-child.pid, 'SIGTERM');
      } catch {
        // Already gone.
      }
    }
    await new Promise((resolve) =>
      child.exitCode === null ? child.once('exit', resolve) : resolve(undefined),
    );
  }
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

/** Calls `tools/call` over a raw 2025-era stateless request; resolves with the response text. */
async function callTool(mcpUrl: string, name: string, args: Record<string, unknown>): Promise<string> {
  const res = await callTool2025(mcpUrl, name, args);
  expect(res.status).toBe(200);
  return res.text();
}

describe('commands shown in the docs', () => {
  it('quick start: npm start brings up the embedded cluster and prints the MCP URL', async () => {
    const block = docBlock('README.md', 'quick-start');
    expect(block).toMatch(/^npm ci && npm start\b/m);
    expect(block).toMatch(/^npm test\b/m);
    // `npm ci` and `npm test` are what .ci/run runs on a clean clone. `npm start` is the build
    // (done by the suite already: rebuilding would pull dist/ from under the other suites) and
    // then this command, run here on a free port.
    const start = (
      JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { scripts: { start: string } }
    ).scripts.start;
    expect(start).toBe('npm run build && node dist/services/cli/main.js up');
    const up = await startUp([]);
    try {
      expect(up.banner).toContain('MCP endpoint (Streamable HTTP):');
      expect(up.mcpUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/mcp$/);
      expect(await callTool(up.mcpUrl, 'generate_text', { prompt: 'Write a haiku about queues' })).toContain(
        '"content"',
      );
    } finally {
      await up.stop();
    }
  });

  it('a cluster on NATS, each role its own process, as docs/running.md shows it', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'mcp-docs-nats-'));
    dirs.push(dir);
    const ports = new Map<string, number>();
    for (const port of ['4222', '8000', '3000', '3001', '8188']) ports.set(port, await freePort());
    const script = docBlock('docs/running.md', 'nats-cluster')
      .replace(/127\.0\.0\.1:(4222|8000|3000|3001|8188)\b/g, (_, p: string) => `127.0.0.1:${ports.get(p)}`)
      .replace(
        /(-p|--port) (4222|8000|3000|3001|8188)\b/g,
        (_, flag: string, p: string) => `${flag} ${ports.get(p)}`,
      )
      .replace(/\/tmp\/mcp-cluster-nats/g, join(dir, 'nats'));
    // The block as one shell script that stays up while its roles run; detached, so the whole
    // group is stopped afterwards.
    const shell = spawn('bash', ['-c', `${script}\nwait`], {
      cwd: ROOT,
      env: cleanEnv({ MCP_CLUSTER_LOG_LEVEL: 'warn' }),
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    children.push(shell);
    let output = '';
    shell.stdout?.on('data', (d: Buffer) => {
      output += d.toString();
    });
    shell.stderr?.on('data', (d: Buffer) => {
      output += d.toString();
    });
    const ingress = [ports.get('3000'), ports.get('3001')].map((p) => `http://127.0.0.1:${p}`);
    const ready = async (base: string) =>
      (await fetch(`${base}/readyz`).catch(() => undefined))?.status === 200;
    await waitFor(
      () => `both ingress replicas ready (output so far:\n${output})`,
      async () => {
        const states = await Promise.all(ingress.map(ready));
        return states.every(Boolean);
      },
      60_000,
    );
    // Every pool answers through either replica: the workers took the calls from NATS.
    expect(
      await callTool(`${ingress[0]}/mcp`, 'generate_text', { prompt: 'Hello', max_tokens: 8 }),
    ).toContain('"content"');
    expect(await callTool(`${ingress[1]}/mcp`, 'embed', { texts: ['a queue'] })).toContain('"content"');
    expect(
      await callTool(`${ingress[1]}/mcp`, 'generate_image', {
        prompt: 'a queue',
        width: 64,
        height: 64,
        steps: 2,
      }),
    ).toContain('"image"');
  }, 120_000);

  it('mcp-cluster plan, as docs/autoscaling.md shows it, against a running cluster', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'mcp-docs-plan-'));
    dirs.push(dir);
    // The configuration the page plans for: the built-in defaults (an empty file).
    writeFileSync(join(dir, 'cluster.yaml'), '');
    const up = await startUp(['--config', join(dir, 'cluster.yaml')]);
    try {
      const metrics = up.mcpUrl.replace(/\/mcp$/, '/metrics');
      const command = docBlock('docs/autoscaling.md', 'plan')
        .trim()
        .replace(/http:\/\/127\.0\.0\.1:\d+\/metrics/, metrics);
      expect(command).toMatch(/^mcp-cluster plan /);
      const args = command.split(/\s+/).slice(1);
      const plan = spawn(process.execPath, [CLI, ...args], {
        cwd: dir,
        env: cleanEnv(),
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      children.push(plan);
      let stdout = '';
      let stderr = '';
      plan.stdout?.on('data', (d: Buffer) => {
        stdout += d.toString();
      });
      plan.stderr?.on('data', (d: Buffer) => {
        stderr += d.toString();
      });
      // Load while the plan observes, so the rates it reads are not all zero.
      const load = (async () => {
        for (let i = 0; i < 20 && plan.exitCode === null; i++)
          await callTool(up.mcpUrl, 'generate_text', { prompt: 'load', max_tokens: 4 });
      })();
      const code = await new Promise<number | null>((resolve) => plan.once('exit', resolve));
      await load;
      expect(code, stderr).toBe(0);
      expect(stdout).toContain('Capacity plan: queue wait');
      expect(stdout).toContain('arrivals × 4 (what-if)');
      expect(stdout).toMatch(/^inference\s/m);
    } finally {
      await up.stop();
    }
  }, 60_000);
});
