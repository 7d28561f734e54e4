import { copyFileSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { replicasForWait } from '../services/autoscaler/index.js';
import { startNatsServer } from './support/brokers.js';
import { type SimCluster, startSimCluster } from './support/cluster.js';
import { connectClient, type TestClient } from './support/mcp-clients.js';
import { removeTempDir, trackTempDir } from './support/process-guard.js';
import { type RoleProcess, runCli } from './support/processes.js';
import {
  instantQuery,
  type LoggedQuery,
  PROMETHEUS_DIR,
  type PrometheusServer,
  promtool,
  type Sample,
  startPrometheus,
} from './support/prometheus.js';
import { waitFor } from './support/wait.js';

// The shipped monitoring files against the real tools: promtool checks and unit-tests the alert
// rules, and a real Prometheus, started with deploy/prometheus/prometheus.yml, scrapes a cluster of
// separate processes; then `mcp-cluster plan --prometheus` and every query of the Grafana dashboard
// are answered by it.

interface RuleGroup {
  rules: { alert?: string; record?: string; expr: string }[];
}
interface RuleTestFile {
  rule_files: string[];
  tests: { alert_rule_test?: { alertname: string; exp_alerts?: unknown[] }[] }[];
}

const rulesPath = join(PROMETHEUS_DIR, 'rules.yaml');
const alertNames = (): string[] =>
  (parseYaml(readFileSync(rulesPath, 'utf8')) as { groups: RuleGroup[] }).groups.flatMap((g) =>
    g.rules.flatMap((r) => (r.alert ? [r.alert] : [])),
  );

describe('deploy/prometheus with promtool', () => {
  it('rules.yaml and prometheus.yml pass promtool check', async () => {
    const rules = await promtool(['check', 'rules', 'rules.yaml']);
    expect(rules.code, rules.stdout + rules.stderr).toBe(0);
    expect(rules.stdout).toContain(`SUCCESS: ${alertNames().length} rules found`);
    const config = await promtool(['check', 'config', 'prometheus.yml']);
    expect(config.code, config.stdout + config.stderr).toBe(0);
  });

  it('rules.test.yaml shows every alert firing on its series and quiet on healthy ones, and passes', async () => {
    const tests = parseYaml(readFileSync(join(PROMETHEUS_DIR, 'rules.test.yaml'), 'utf8')) as RuleTestFile;
    expect(tests.rule_files).toEqual(['rules.yaml']);
    const cases = tests.tests.flatMap((t) => t.alert_rule_test ?? []);
    for (const alert of alertNames()) {
      const mine = cases.filter((c) => c.alertname === alert);
      expect(
        mine.some((c) => (c.exp_alerts ?? []).length > 0),
        `${alert} is never shown firing`,
      ).toBe(true);
      expect(
        mine.some((c) => (c.exp_alerts ?? []).length === 0),
        `${alert} is never shown quiet`,
      ).toBe(true);
    }
    const result = await promtool(['test', 'rules', 'rules.test.yaml']);
    expect(result.code, result.stdout + result.stderr).toBe(0);
    expect(result.stdout).toContain('SUCCESS');
  });

  it('the unit tests fail on rules that alert too late', async () => {
    // The same tests against rules whose thresholds are ten times higher: promtool must say so.
    const dir = mkdtempSync(join(tmpdir(), 'mcp-cluster-rules-'));
    trackTempDir(dir);
    try {
      copyFileSync(join(PROMETHEUS_DIR, 'rules.test.yaml'), join(dir, 'rules.test.yaml'));
      writeFileSync(join(dir, 'rules.yaml'), readFileSync(rulesPath, 'utf8').replace(/> 30$/gm, '> 300'));
      const result = await promtool(['test', 'rules', 'rules.test.yaml'], dir);
      expect(result.code).not.toBe(0);
      expect(result.stdout + result.stderr).toContain('McpClusterOldestWaitAboveSlo');
      expect(result.stdout + result.stderr).toContain('McpClusterTenantQueueWaitHigh');
    } finally {
      removeTempDir(dir);
    }
  });
});

interface Panel {
  title: string;
  targets?: { expr: string }[];
}
interface Dashboard {
  panels: Panel[];
  templating: { list: { name: string; type: string; definition?: string; allValue?: string }[] };
}

describe('a real Prometheus with the shipped config, scraping a cluster', () => {
  let cluster: SimCluster;
  let prometheus: PrometheusServer;
  const roles: RoleProcess[] = [];
  const clients: TestClient[] = [];
  let loadStart = 0;
  let loadEnd = 0;
  let rejected = 0;

  beforeAll(async () => {
    cluster = await startSimCluster({
      name: 'prom',
      startBroker: startNatsServer,
      // Slow tokens, so calls overlap, queue and get held for their tenant's fair-queue share.
      sim: { ttftMs: 20, tokensPerSecond: 100, maxNumSeqs: 16 },
      config: (simUrl) => `
tenants:
  acme: { weight: 2 }
  beta: { weight: 1 }
  limited: { limits: { inference: { rate: 1, burst: 1 } } }
pools:
  inference:
    backend: openai-chat
    endpoints: [{ url: "${simUrl}", maxConcurrency: 2 }]
    fairQueue: { size: 24 }
  embeddings: { backend: openai-embeddings, endpoints: [{ url: "${simUrl}", maxConcurrency: 8 }] }
tools:
  - { name: generate_text, template: generate_text, pool: inference, model: sim-llm }
  - { name: embed, template: embed, pool: embeddings, model: sim-embed }
`,
    });
    roles.push(
      ...(await Promise.all([
        cluster.ingress('ingress-a'),
        cluster.worker('worker-inference-1', 'inference'),
        cluster.worker('worker-embeddings-1', 'embeddings'),
      ])),
    );
    const [ingress, inference, embeddings] = roles as [RoleProcess, RoleProcess, RoleProcess];
    const ingressUrl = new URL(String(ingress.ready.url));
    prometheus = await startPrometheus({
      ingress: [{ targets: [ingressUrl.host], labels: { instance: 'ingress-a' } }],
      workers: [
        {
          targets: [`127.0.0.1:${String(inference.ready.port)}`],
          labels: { instance: 'worker-inference-1' },
        },
        {
          targets: [`127.0.0.1:${String(embeddings.ready.port)}`],
          labels: { instance: 'worker-embeddings-1' },
        },
      ],
    });
    // Every target scraped and up before the load starts, so the counters' rise lies inside the data.
    await waitFor(
      'Prometheus to scrape all three targets',
      async () => (await activeTargets(prometheus.url)).filter((t) => t.health === 'up').length === 3,
      30_000,
    );

    for (const tenant of ['acme', 'acme', 'acme', 'beta', 'beta', 'limited']) {
      clients.push(await connectClient('v2', ingressUrl.href, { headers: { 'Mcp-Cluster-Tenant': tenant } }));
    }
    loadStart = Date.now();
    // A short load: three acme and two beta agents each make 6 generate_text calls and 3 embeds (the
    // same texts again, from the cache the second time); the limited tenant sends 6 calls at once
    // against its rate limit of 1 call/s, so some are refused.
    const limited = clients[5] as TestClient;
    const outcomes = await Promise.all([
      ...clients.slice(0, 5).map(async (client, i) => {
        for (let n = 0; n < 6; n++) {
          await client.callTool('generate_text', { prompt: `agent ${i} call ${n}`, max_tokens: 12 });
          if (n % 2 === 0) await client.callTool('embed', { texts: [`agent ${i}`, 'shared text'] });
        }
        return 0;
      }),
      ...Array.from({ length: 6 }, (_, n) =>
        limited.callTool('generate_text', { prompt: `limited ${n}`, max_tokens: 4 }).then(
          () => 0,
          () => 1,
        ),
      ),
    ]);
    rejected = outcomes.reduce((a, b) => a + b, 0);
    loadEnd = Date.now();
    // Until every target was scraped after the load ended: its last figures are in the data.
    await waitFor(
      'a scrape of every target after the load',
      async () =>
        (await activeTargets(prometheus.url)).every(
          (t) => t.health === 'up' && Date.parse(t.lastScrape) > loadEnd,
        ),
      30_000,
    );
  }, 120_000);

  afterAll(async () => {
    await Promise.all(clients.map((c) => c.close().catch(() => {})));
    await prometheus?.stop();
    await Promise.all(roles.map((r) => r.stop()));
    await cluster?.stop();
  }, 60_000);

  it('discovers the ingress and the workers through the shipped jobs', async () => {
    const targets = await activeTargets(prometheus.url);
    expect(targets.map((t) => `${t.labels.job} ${t.labels.instance}`).sort()).toEqual([
      'mcp-cluster-ingress ingress-a',
      'mcp-cluster-worker worker-embeddings-1',
      'mcp-cluster-worker worker-inference-1',
    ]);
    // The metrics keep their own pool label: no target label renamed it.
    const pools = await instantQuery(
      prometheus.url,
      'count by (pool, job) (mcp_cluster_worker_inflight_calls)',
    );
    expect(pools.map((s) => `${s.metric.job} ${s.metric.pool}`).sort()).toEqual([
      'mcp-cluster-worker embeddings',
      'mcp-cluster-worker inference',
    ]);
    expect(await instantQuery(prometheus.url, '{exported_pool!=""}')).toEqual([]);
  });

  it('loads every alert of rules.yaml and evaluates it without error; none fires on the healthy cluster', async () => {
    const expected = alertNames().sort();
    const rules = await waitFor(
      'every rule evaluated after the load',
      async () => {
        const res = await fetch(`${prometheus.url}/api/v1/rules?type=alert`);
        const body = (await res.json()) as {
          data: {
            groups: {
              rules: {
                name: string;
                health: string;
                lastError?: string;
                state: string;
                lastEvaluation: string;
              }[];
            }[];
          };
        };
        const all = body.data.groups.flatMap((g) => g.rules);
        return all.every((r) => Date.parse(r.lastEvaluation) > loadEnd) ? all : undefined;
      },
      30_000,
    );
    expect(rules.map((r) => r.name).sort()).toEqual(expected);
    for (const rule of rules) expect(rule.health, `${rule.name}: ${rule.lastError ?? ''}`).toBe('ok');
    expect(rules.filter((r) => r.state === 'firing').map((r) => r.name)).toEqual([]);
  });

  it('answers every query of the Grafana dashboard with data', async () => {
    const dashboard = JSON.parse(
      readFileSync(new URL('../deploy/grafana/dashboard.json', import.meta.url), 'utf8'),
    ) as Dashboard;
    const at = loadEnd / 1000;
    // A rate window over the whole load (the way Grafana widens $__rate_interval over a zoomed-out range).
    const rateWindow = `${Math.ceil((loadEnd - loadStart) / 1000) + 5}s`;
    const variables = dashboard.templating.list.filter((v) => v.type === 'query');
    expect(variables.map((v) => v.name).sort()).toEqual(['pool', 'tenant']);
    // The variables' own queries, label_values(metric, label), through the label values API.
    for (const variable of variables) {
      const m = /^label_values\((\w+), (\w+)\)$/.exec(variable.definition ?? '');
      expect(m, variable.definition).not.toBeNull();
      const params = new URLSearchParams({ 'match[]': m?.[1] ?? '' });
      const res = (await (
        await fetch(`${prometheus.url}/api/v1/label/${m?.[2]}/values?${params}`)
      ).json()) as {
        data: string[];
      };
      expect(res.data.sort()).toEqual(
        variable.name === 'pool' ? ['embeddings', 'inference'] : ['acme', 'beta', 'limited'],
      );
    }
    const substitute = (expr: string) =>
      expr.replaceAll('$__rate_interval', rateWindow).replaceAll('$pool', '.*').replaceAll('$tenant', '.*');
    const empty: string[] = [];
    let queries = 0;
    for (const panel of dashboard.panels) {
      for (const target of panel.targets ?? []) {
        queries++;
        const expr = substitute(target.expr);
        expect(expr, panel.title).not.toContain('$');
        if ((await instantQuery(prometheus.url, expr, at)).length === 0)
          empty.push(`${panel.title}: ${expr}`);
      }
    }
    expect(queries).toBeGreaterThan(30);
    expect(empty, `queries without data:\n${empty.join('\n')}`).toEqual([]);
  });

  it("the load met the limited tenant's rate limit", () => {
    expect(rejected).toBeGreaterThan(0);
    expect(rejected).toBeLessThan(6);
  });

  it('mcp-cluster plan --prometheus plans the pools from what it scraped', async () => {
    // A window reaching back before Prometheus started: every sample of the load lies in it. Its
    // figures still move a little from one instant to the next (increase() extrapolates to the
    // window's end), hence the comparison below at the instants the plan asked.
    const windowS = Math.ceil((Date.now() - loadStart) / 1000) + 60;
    const result = await runCli([
      'plan',
      '--config',
      cluster.configPath,
      '--prometheus',
      prometheus.url,
      '--window',
      `${windowS}s`,
      '--json',
    ]);
    expect(result.code, result.stderr).toBe(0);
    const log = prometheus.queryLog();
    const asked = (query: string) => {
      const found = log.find((q) => q.query === query);
      expect(found, `the plan did not ask ${query}`).toBeDefined();
      return found as LoggedQuery;
    };
    asked(`sum by (pool) (rate(mcp_cluster_queue_enqueued_total{priority!="low"}[${windowS}s]))`);
    const plan = JSON.parse(result.stdout) as {
      windowMs: number;
      targetWaitMs: number;
      percentile: number;
      pools: {
        pool: string;
        arrivalPerSec: number;
        completedPerSec: number;
        meanServiceMs: number | null;
        replicas: number;
        replicaConcurrency: number;
        neededReplicas: number | null;
        serviceCs2: number | null;
      }[];
    };
    expect(plan.windowMs).toBe(windowS * 1000);
    expect(plan.pools.map((p) => p.pool).sort()).toEqual(['embeddings', 'inference']);
    // The plan's mean service time is the increase of the histogram's sum over that of its count,
    // each as Prometheus answered it: asked again at the instants the plan asked them.
    const service = async (part: 'sum' | 'count') => {
      const { query, time } = asked(
        `sum by (pool) (increase(mcp_cluster_backend_duration_seconds_${part}[${windowS}s]))`,
      );
      return instantQuery(prometheus.url, query, time);
    };
    const [sums, counts] = await Promise.all([service('sum'), service('count')]);
    // Cs² from Σ S² and the sum and count of the series that export it (every worker here does):
    // the `and` queries must be PromQL a real Prometheus answers, with the same figures.
    const w = `[${windowS}s]`;
    const squaresOf = `increase(mcp_cluster_backend_duration_squared_seconds_total${w})`;
    const again = async (query: string) => {
      const { time } = asked(query);
      return instantQuery(prometheus.url, query, time);
    };
    const [squares, squaresSum, squaresCount] = await Promise.all([
      again(`sum by (pool) (${squaresOf})`),
      again(`sum by (pool) (increase(mcp_cluster_backend_duration_seconds_sum${w}) and ${squaresOf})`),
      again(`sum by (pool) (increase(mcp_cluster_backend_duration_seconds_count${w}) and ${squaresOf})`),
    ]);
    const figure = (samples: Sample[], pool: string) =>
      Number(samples.find((s) => s.metric.pool === pool)?.value[1]);
    for (const p of plan.pools) {
      expect(p.replicas, p.pool).toBe(1);
      expect(p.arrivalPerSec, p.pool).toBeGreaterThan(0);
      expect(p.completedPerSec, p.pool).toBeGreaterThan(0);
      const mean = (figure(sums, p.pool) / figure(counts, p.pool)) * 1000;
      expect(mean, p.pool).toBeGreaterThan(0);
      expect(p.meanServiceMs, p.pool).toBeCloseTo(mean, 9);
      // Every worker exports Σ S², so `and` keeps every series: the count of the calls it covers is
      // the histogram's (both extrapolated by increase() at their own instants, hence not exact).
      expect(figure(squaresCount, p.pool) / figure(counts, p.pool), p.pool).toBeCloseTo(1, 1);
      const m = figure(squaresSum, p.pool) / figure(squaresCount, p.pool);
      const cs2 = Math.max(0, figure(squares, p.pool) / figure(squaresCount, p.pool) / m ** 2 - 1);
      expect(p.serviceCs2, p.pool).toBeCloseTo(cs2, 9);
      expect(p.neededReplicas, p.pool).toBe(
        replicasForWait(p.arrivalPerSec, mean, p.replicaConcurrency, plan.targetWaitMs, plan.percentile, cs2),
      );
    }

    const table = await runCli(['plan', '--config', cluster.configPath, '--prometheus', prometheus.url]);
    expect(table.code, table.stderr).toBe(0);
    expect(table.stdout).toMatch(/^inference\s+/m);
    expect(table.stdout).toMatch(/^embeddings\s+/m);
  }, 60_000);
});

interface Target {
  labels: Record<string, string>;
  health: string;
  lastScrape: string;
}

async function activeTargets(url: string): Promise<Target[]> {
  const body = (await (await fetch(`${url}/api/v1/targets?state=active`)).json()) as {
    data: { activeTargets: Target[] };
  };
  return body.data.activeTargets;
}
