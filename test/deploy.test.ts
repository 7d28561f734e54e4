/**
 * Static checks of deploy/: every manifest parses, and what the manifests say about the program
 * (commands, flags, environment variables, ports, probe paths, metric and queue names) matches the
 * code. Nothing here runs Docker, Kubernetes or the network.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { backendsVariable, ENV_OVERRIDES, PRIORITIES } from '../services/core/index.js';
import { isLoopback, parseKeysFile } from '../services/ingress/index.js';
import { embedSettings } from '../workers/embeddings/index.js';
import { families, resolveConfig } from './support/families.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const deployDir = join(root, 'deploy');
const read = (path: string) => readFileSync(join(root, path), 'utf8');

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);
const obj = (v: unknown): Obj => (isObj(v) ? v : {});
const arr = (v: unknown): unknown[] => (Array.isArray(v) ? v : []);
const str = (v: unknown): string => (typeof v === 'string' ? v : typeof v === 'number' ? String(v) : '');

function walk(dir: string): string[] {
  return readdirSync(dir).flatMap((entry) => {
    const path = join(dir, entry);
    return statSync(path).isDirectory() ? walk(path) : [path];
  });
}

interface Doc {
  file: string;
  doc: Obj;
}

const yamlFiles = walk(deployDir)
  .filter((f) => /\.ya?ml$/.test(f))
  .map((f) => relative(root, f));

/** Every YAML document under deploy/, parsed; parse errors fail the first test. */
const parseErrors: string[] = [];
const docs: Doc[] = yamlFiles.flatMap((file) =>
  parseAllDocuments(read(file), { merge: true }).flatMap((d) => {
    for (const e of d.errors) parseErrors.push(`${file}: ${e.message}`);
    const value: unknown = d.toJS();
    return isObj(value) ? [{ file, doc: value }] : [];
  }),
);

const kube = (kind: string, under = 'deploy/kubernetes') =>
  docs.filter((d) => d.file.startsWith(under) && d.doc.kind === kind);
const podSpec = (d: Doc) => obj(obj(obj(d.doc.spec).template).spec);
const podLabels = (d: Doc) => obj(obj(obj(obj(d.doc.spec).template).metadata).labels);
const containers = (d: Doc) => arr(podSpec(d).containers).map(obj);
const isOurs = (c: Obj) => /^mcp-cluster(:|$)/.test(str(c.image));
/** What a container's preStop hook waits, ms: `exec: sleep N` or the `sleep` action; 0 without one. */
function preStopMs(c: Obj): number {
  const hook = obj(obj(c.lifecycle).preStop);
  const seconds = obj(hook.sleep).seconds;
  if (typeof seconds === 'number') return seconds * 1000;
  const command = arr(obj(hook.exec).command).map(str);
  const sleep = command.join(' ').match(/\bsleep (\d+(?:\.\d+)?)\b/);
  expect(Object.keys(hook).length === 0 || sleep !== null, `a preStop that is not a sleep: ${command}`).toBe(
    true,
  );
  return sleep ? Number(sleep[1]) * 1000 : 0;
}

/** The Deployments (and StatefulSets) whose containers run the mcp-cluster image. */
const workloads = [...kube('Deployment'), ...kube('StatefulSet')];
const ourContainers = workloads.flatMap((d) =>
  containers(d)
    .filter(isOurs)
    .map((c) => ({ d, c })),
);

/** The compose services that run the mcp-cluster image. */
const composeDocs = docs.filter((d) => /^deploy\/compose[^/]*\.ya?ml$/.test(d.file));
const composeServices = composeDocs.flatMap((d) =>
  Object.entries(obj(d.doc.services)).map(([name, s]) => ({ file: d.file, name, s: obj(s) })),
);
const composeOurs = composeServices.filter((x) => /^mcp-cluster(:|$)/.test(str(x.s.image)));

// The cluster configuration: the file behind the base's configMapGenerator.
const baseKustomization = docs.find((d) => d.file === 'deploy/kubernetes/base/kustomization.yaml')!.doc;
const generator = (list: unknown, name: string) =>
  arr(list)
    .map(obj)
    .find((g) => g.name === name);
const configFile = str(arr(generator(baseKustomization.configMapGenerator, 'mcp-cluster-config')?.files)[0]);
const clusterYaml = read(join('deploy/kubernetes/base', configFile));
const cluster = resolveConfig(clusterYaml, {}, 'deploy/kubernetes/base/cluster.yaml');

/** `KEY=value` literals of a generator. */
const literals = (g: Obj | undefined): Record<string, string> =>
  Object.fromEntries(
    arr(g?.literals).map((l) => {
      const [key = '', ...rest] = str(l).split('=');
      return [key, rest.join('=')];
    }),
  );

/** Commands the CLI implements: the keys of `COMMANDS` in services/cli/main.ts, one module each. */
const cliSource = read('services/cli/main.ts');
const cliCommands = new Set(
  [...(/const COMMANDS[^{]*\{([^}]*)\}/.exec(cliSource)?.[1]?.matchAll(/([a-z-]+),/g) ?? [])].map(
    (m) => m[1],
  ),
);
/** The CLI's usage text (`export const USAGE = \`...\`` in services/cli/usage.ts). */
const cliUsage = /const USAGE = `([^`]*)`/.exec(read('services/cli/usage.ts'))?.[1] ?? '';
/** Commands the manifests use before the CLI has them; their manifests must say so. */
const PLANNED_COMMANDS = new Set<string>();
/** Flags each command takes (services/cli/main.ts; `sim` also takes its options' flags). */
const FLAGS: Record<string, Set<string>> = {
  ingress: new Set(['--config', '--broker', '--port', '--delivery-port']),
  worker: new Set(['--config', '--broker', '--port', '--pool']),
  sim: new Set(['--kind', '--host', '--port']),
  autoscaler: new Set(['--config', '--broker', '--port']),
};

/** Flag → value pairs of an argument list (every flag used here takes a value). */
function flags(args: string[]): Map<string, string> {
  const out = new Map<string, string>();
  for (let i = 1; i < args.length; i += 2) out.set(args[i] ?? '', args[i + 1] ?? '');
  return out;
}

const allArgs = [
  ...ourContainers.map(({ d, c }) => ({
    where: `${d.file} ${str(obj(d.doc.metadata).name)}`,
    args: arr(c.args).map(str),
  })),
  ...composeOurs.map((x) => ({ where: `${x.file} ${x.name}`, args: arr(x.s.command).map(str) })),
];

/** The names a metric may be queried by: counters and gauges as named, histograms with suffixes. */
function exportedMetricNames(): Set<string> {
  const names = new Set<string>();
  for (const file of ['services/core/metrics.ts', 'workers/embeddings/metrics.ts']) {
    const text = read(file);
    for (const m of text.matchAll(/new (Counter|Gauge|Histogram)\(\{\s*name: '([a-z0-9_]+)'/g)) {
      const [, type = '', name = ''] = m;
      names.add(name);
      if (type === 'Histogram') for (const s of ['_bucket', '_sum', '_count']) names.add(name + s);
    }
  }
  return names;
}

/** `${name}` as written in a template literal of the source. */
const slot = (name: string) => `\${${name}}`;

const metricRefs = (text: string) => [...text.matchAll(/\bmcp_cluster_[a-z0-9_]+/g)].map((m) => m[0]);

describe('deploy/ manifests parse', () => {
  it('every YAML document parses', () => {
    expect(yamlFiles.length).toBeGreaterThan(10);
    expect(parseErrors).toEqual([]);
  });

  it('the Grafana dashboard is JSON with panels that query Prometheus', () => {
    const dash = JSON.parse(read('deploy/grafana/dashboard.json')) as Obj;
    const panels = arr(dash.panels).map(obj);
    expect(panels.length).toBeGreaterThanOrEqual(7);
    for (const p of panels) expect(arr(p.targets).length, str(p.title)).toBeGreaterThan(0);
    const ids = panels.map((p) => p.id);
    expect(new Set(ids).size).toBe(ids.length);
  });

  it('every kustomization resource, component and generator file exists', () => {
    const kustomizations = docs.filter((x) => x.doc.kind === 'Kustomization' || x.doc.kind === 'Component');
    expect(kustomizations.length).toBeGreaterThanOrEqual(6);
    for (const d of kustomizations) {
      const dir = dirname(join(root, d.file));
      for (const r of arr(d.doc.resources).map(str))
        expect(existsSync(join(dir, r)), `${d.file}: ${r}`).toBe(true);
      for (const c of arr(d.doc.components).map(str))
        expect(existsSync(join(dir, c, 'kustomization.yaml')), `${d.file}: component ${c}`).toBe(true);
      for (const g of [...arr(d.doc.configMapGenerator), ...arr(d.doc.secretGenerator)].map(obj)) {
        for (const f of arr(g.files).map(str)) {
          expect(existsSync(join(dir, f.split('=').pop() ?? f)), `${d.file}: ${f}`).toBe(true);
        }
      }
    }
  });
});

describe('commands and flags', () => {
  it('finds the CLI commands in the source', () => {
    for (const c of ['up', 'ingress', 'worker', 'sim', 'autoscaler'])
      expect(cliCommands.has(c), c).toBe(true);
    expect(cliUsage).toMatch(/^ {2}mcp-cluster autoscaler \[--config FILE\] \[--broker URL\]/m);
  });

  it('every container and compose service runs a real command with its real flags', () => {
    expect(allArgs.length).toBeGreaterThanOrEqual(9);
    for (const { where, args } of allArgs) {
      const [command = ''] = args;
      expect(cliCommands.has(command) || PLANNED_COMMANDS.has(command), `${where}: command ${command}`).toBe(
        true,
      );
      expect((args.length - 1) % 2, `${where}: flags take one value each`).toBe(0);
      for (const [flag, value] of flags(args)) {
        expect(FLAGS[command]?.has(flag), `${where}: ${command} takes no ${flag}`).toBe(true);
        expect(value.startsWith('--'), `${where}: ${flag} needs a value`).toBe(false);
      }
      if (command === 'sim') expect(['vllm', 'comfyui', undefined]).toContain(flags(args).get('--kind'));
    }
  });

  it('a command the CLI lacks yet is marked as such, and its Deployment is scaled to 0', () => {
    for (const { d, c } of ourContainers) {
      const command = str(arr(c.args)[0]);
      if (cliCommands.has(command)) continue;
      expect(read(d.file), `${d.file} must say ${command} is not implemented`).toMatch(/NOT YET IMPLEMENTED/);
      expect(obj(d.doc.spec).replicas, `${d.file}: ${command} cannot run yet`).toBe(0);
    }
  });

  it('every --pool names a pool of cluster.yaml, and every pool has a worker', () => {
    const pools = allArgs.filter((a) => a.args[0] === 'worker').map((a) => flags(a.args).get('--pool'));
    for (const p of pools) expect(Object.keys(cluster.pools)).toContain(p);
    for (const p of Object.keys(cluster.pools)) expect(pools).toContain(p);
  });

  it('mounts the configuration where --config points', () => {
    for (const { d, c } of ourContainers) {
      const config = flags(arr(c.args).map(str)).get('--config');
      if (!config) continue;
      const mount = arr(c.volumeMounts)
        .map(obj)
        .find((m) => config.startsWith(`${str(m.mountPath)}/`));
      expect(mount, `${d.file}: no volume at ${config}`).toBeDefined();
      const volume = arr(podSpec(d).volumes)
        .map(obj)
        .find((v) => v.name === mount?.name);
      expect(obj(volume?.configMap).name).toBe('mcp-cluster-config');
      expect(config.endsWith(`/${configFile}`)).toBe(true);
    }
  });
});

describe('the cluster configuration', () => {
  it('resolves, on NATS, with the three pools and no endpoints (each worker pod brings its own)', () => {
    expect(cluster.brokerUrl).toBe('nats://nats:4222');
    expect(cluster.namespace).toBe('mcp');
    expect(cluster.pools.inference?.backend).toBe('openai-chat');
    expect(['tei', 'openai-embeddings']).toContain(cluster.pools.embeddings?.backend);
    expect(cluster.pools.diffusion?.backend).toBe('comfyui');
    // The GPU servers are sidecars of the worker pods, found through MCP_CLUSTER_BACKENDS_<POOL>:
    // an endpoint list here would name servers outside the pods, which scaling would not add.
    const raw = obj(parseAllDocuments(clusterYaml)[0]?.toJS());
    for (const [name, pool] of Object.entries(obj(raw.pools))) {
      expect(Object.keys(obj(pool)), `pools.${name}`).not.toContain('endpoints');
      expect(cluster.pools[name]?.endpoints, name).toEqual([]);
    }
    // No environment override exists for worker.host: probes need it bound on the pod IP.
    expect(cluster.worker.host).toBe('0.0.0.0');
  });

  it('resolves with every Deployment environment applied', () => {
    for (const { d, c } of ourContainers) {
      const env = Object.fromEntries(
        arr(c.env)
          .map(obj)
          .filter((e) => typeof e.value === 'string')
          .map((e) => [str(e.name), str(e.value).replace('$(POD_IP)', '10.0.0.7')]),
      );
      expect(() => resolveConfig(clusterYaml, env, d.file)).not.toThrow();
    }
  });

  it('the NATS we ship keeps its JetStream store on a volume', () => {
    const nats = composeServices.find((x) => x.file === 'deploy/compose.yaml' && x.name === 'nats');
    expect(nats, 'nats in deploy/compose.yaml').toBeDefined();
    const args = arr(nats!.s.command).map(str);
    expect(args).toContain('-js');
    const storeDir = args[args.indexOf('-sd') + 1];
    expect(args.indexOf('-sd'), 'nats runs with a store directory (-sd)').toBeGreaterThan(-1);
    const mount = arr(nats!.s.volumes)
      .map(str)
      .find((m) => m.endsWith(`:${storeDir}`));
    expect(mount, `a volume on ${storeDir}`).toBeTruthy();
    const doc = composeDocs.find((d) => d.file === 'deploy/compose.yaml')!.doc;
    expect(Object.keys(obj(doc.volumes))).toContain(mount!.split(':')[0]);
  });

  it('every Redis we ship keeps its data across a restart: append-only file on a volume', () => {
    /** The value after `--flag` in an argument list, or undefined. */
    const flag = (args: string[], name: string) => {
      const i = args.indexOf(`--${name}`);
      return i === -1 ? undefined : args[i + 1];
    };
    const expectPersistent = (args: string[], where: string) => {
      expect(flag(args, 'appendonly'), where).toBe('yes');
      expect(['everysec', 'always'], where).toContain(flag(args, 'appendfsync'));
      expect(flag(args, 'maxmemory-policy'), where).toBe('noeviction');
    };
    // Compose: the redis service's command, and a named volume on its data directory.
    const compose = composeServices.find(
      (x) => x.file === 'deploy/compose.bullmq.yaml' && x.name === 'redis',
    );
    expect(compose, 'redis in deploy/compose.bullmq.yaml').toBeDefined();
    expectPersistent(arr(compose!.s.command).map(str), 'compose redis command');
    const composeDoc = composeDocs.find((d) => d.file === 'deploy/compose.bullmq.yaml')!.doc;
    const mounts = arr(compose!.s.volumes).map(str);
    const named = mounts.find((m) => m.endsWith(':/data'))?.split(':')[0];
    expect(named, 'compose redis mounts a volume on /data').toBeTruthy();
    expect(Object.keys(obj(composeDoc.volumes))).toContain(named);
    // Kubernetes: the overlay's Redis Deployment, its /data mount and the claim behind it.
    const overlay = 'deploy/kubernetes/overlays/bullmq';
    const redis = kube('Deployment', overlay).find((d) => str(obj(d.doc.metadata).name) === 'redis');
    expect(redis, 'the Redis Deployment of the bullmq overlay').toBeDefined();
    const container = containers(redis!).find((c) => c.name === 'redis')!;
    expectPersistent(arr(container.args).map(str), 'kubernetes redis args');
    const mount = arr(container.volumeMounts)
      .map(obj)
      .find((m) => m.mountPath === '/data');
    expect(mount, 'kubernetes redis mounts /data').toBeDefined();
    const volume = arr(podSpec(redis!).volumes)
      .map(obj)
      .find((v) => v.name === mount!.name);
    const claim = str(obj(volume?.persistentVolumeClaim).claimName);
    expect(claim, 'the /data volume is a PersistentVolumeClaim').toBeTruthy();
    expect(
      kube('PersistentVolumeClaim', overlay).map((d) => str(obj(d.doc.metadata).name)),
      'the claim is shipped with the overlay',
    ).toContain(claim);
  });

  it('the bullmq overlay switches the broker to Redis', () => {
    const overlay = docs.find((d) => d.file === 'deploy/kubernetes/overlays/bullmq/kustomization.yaml')!.doc;
    const env = literals(generator(overlay.configMapGenerator, 'mcp-cluster-env'));
    expect(env.MCP_CLUSTER_BROKER_URL).toBe('redis://redis:6379');
    expect(resolveConfig(clusterYaml, env).brokerUrl).toBe('redis://redis:6379');
    // Every role reads that ConfigMap.
    for (const { d, c } of ourContainers) {
      const refs = arr(c.envFrom).map((e) => str(obj(obj(e).configMapRef).name));
      expect(refs, d.file).toContain('mcp-cluster-env');
    }
  });
});

describe('environment variables', () => {
  const known = (name: string) =>
    Object.hasOwn(ENV_OVERRIDES, name) ||
    /^MCP_CLUSTER_BACKENDS_[A-Z0-9_]+$/.test(name) ||
    name === 'MCP_CLUSTER_CONFIG' ||
    name === 'MCP_CLUSTER_LOG_LEVEL';

  it('every MCP_CLUSTER_ variable is one the program reads', () => {
    const names = [
      ...ourContainers.flatMap(({ c }) => arr(c.env).map((e) => str(obj(e).name))),
      ...docs
        .filter((d) => d.doc.kind === 'Kustomization')
        .flatMap((d) =>
          [...arr(d.doc.configMapGenerator), ...arr(d.doc.secretGenerator)].flatMap((g) =>
            Object.keys(literals(obj(g))),
          ),
        ),
      ...composeServices.flatMap((x) => Object.keys(obj(x.s.environment))),
    ].filter((n) => n.startsWith('MCP_CLUSTER_'));
    expect(names.length).toBeGreaterThan(10);
    for (const n of names) expect(known(n), n).toBe(true);
  });

  it('MCP_CLUSTER_BACKENDS_<POOL> names pools of the default configuration compose runs', () => {
    for (const x of composeServices) {
      for (const n of Object.keys(obj(x.s.environment))) {
        const m = /^MCP_CLUSTER_BACKENDS_(.+)$/.exec(n);
        if (m) expect(['INFERENCE', 'EMBEDDINGS', 'DIFFUSION'], n).toContain(m[1]);
      }
    }
  });

  it('the session secret comes from a Secret, marked as a placeholder', () => {
    const secret = literals(generator(baseKustomization.secretGenerator, 'mcp-cluster-session'));
    expect(secret.MCP_CLUSTER_SESSION_SECRET).toMatch(/CHANGE-ME/);
    const ingress = ourContainers.find(({ c }) => arr(c.args)[0] === 'ingress');
    const refs = arr(ingress?.c.envFrom).map((e) => str(obj(obj(e).secretRef).name));
    expect(refs).toContain('mcp-cluster-session');
  });
});

describe('identity in the manifests', () => {
  it('the Kubernetes ingress listens on every address, so it authenticates, with keys from a mounted Secret', async () => {
    expect(isLoopback(cluster.ingress.host)).toBe(false);
    expect(cluster.auth.mode).not.toBe('none');
    expect(cluster.auth.allowUnauthenticated).toBe(false);
    const ingress = ourContainers.find(({ c }) => arr(c.args)[0] === 'ingress');
    const keysDir = dirname(cluster.auth.apiKeys.file);
    const mount = arr(ingress?.c.volumeMounts)
      .map(obj)
      .find((m) => m.mountPath === keysDir);
    // A whole-volume mount (no subPath): kubelet updates the file in place when the Secret changes.
    expect(mount?.subPath).toBeUndefined();
    const volume = arr(podSpec(ingress!.d).volumes)
      .map(obj)
      .find((v) => v.name === mount?.name);
    const secretName = str(obj(volume?.secret).secretName);
    const keys = generator(baseKustomization.secretGenerator, secretName);
    // Applied in place, not as a new hash-named Secret that would roll the ingress.
    expect(obj(keys?.options).disableNameSuffixHash).toBe(true);
    const [target = '', source = ''] = str(arr(keys?.files)[0]).split('=');
    expect(join(keysDir, target)).toBe(cluster.auth.apiKeys.file);
    expect(parseKeysFile(read(join('deploy/kubernetes/base', source)), source).size).toBe(0);
  });

  it('compose runs without credentials only on the host loopback, saying so', () => {
    const ingress = composeOurs.find((x) => arr(x.s.command)[0] === 'ingress');
    const env = obj(ingress?.s.environment);
    expect(str(env.MCP_CLUSTER_AUTH_ALLOW_UNAUTHENTICATED)).toBe('true');
    expect(arr(ingress?.s.ports).map(str)).toEqual(['127.0.0.1:3000:3000']);
  });
});

describe('ports, probes, services', () => {
  const envOf = (c: Obj) =>
    Object.fromEntries(
      arr(c.env)
        .map(obj)
        .map((e) => [str(e.name), str(e.value)]),
    );
  const portsOf = (c: Obj) => arr(c.ports).map(obj);

  it('container ports match the ports the environment sets', () => {
    for (const { d, c } of ourContainers) {
      const env = envOf(c);
      const declared = portsOf(c).map((p) => str(p.containerPort));
      for (const key of [
        'MCP_CLUSTER_INGRESS_PORT',
        'MCP_CLUSTER_DELIVERY_PORT',
        'MCP_CLUSTER_WORKER_PORT',
        'MCP_CLUSTER_AUTOSCALER_PORT',
      ]) {
        if (env[key] !== undefined) expect(declared, `${d.file}: ${key}`).toContain(env[key]);
      }
      if (env.MCP_CLUSTER_DELIVERY_ADVERTISE !== undefined) {
        expect(env.MCP_CLUSTER_DELIVERY_ADVERTISE).toBe(`$(POD_IP):${env.MCP_CLUSTER_DELIVERY_PORT}`);
        const podIp = arr(c.env)
          .map(obj)
          .find((e) => e.name === 'POD_IP');
        expect(obj(obj(podIp?.valueFrom).fieldRef).fieldPath).toBe('status.podIP');
      }
      const command = str(arr(c.args)[0]);
      if (command === 'ingress') {
        expect(env.MCP_CLUSTER_INGRESS_HOST).toBe('0.0.0.0');
        expect(env.MCP_CLUSTER_DELIVERY_HOST).toBe('0.0.0.0');
      }
      if (command === 'worker') expect(env.MCP_CLUSTER_WORKER_PORT, d.file).toBeDefined();
    }
    for (const x of composeOurs) {
      const env = obj(x.s.environment);
      const published = arr(x.s.ports).map((p) => str(p).split(':').pop());
      if (env.MCP_CLUSTER_INGRESS_PORT !== undefined)
        expect(published).toContain(str(env.MCP_CLUSTER_INGRESS_PORT));
      const port = flags(arr(x.s.command).map(str)).get('--port');
      for (const key of ['MCP_CLUSTER_INGRESS_PORT', 'MCP_CLUSTER_WORKER_PORT']) {
        if (env[key] !== undefined && port !== undefined)
          expect(port, `${x.name}: ${key}`).toBe(str(env[key]));
      }
    }
  });

  it('probes use /healthz and /readyz on a declared port', () => {
    for (const { d, c } of ourContainers) {
      const names = portsOf(c).map((p) => p.name);
      const numbers = portsOf(c).map((p) => p.containerPort);
      for (const probe of ['readinessProbe', 'livenessProbe', 'startupProbe']) {
        const get = obj(obj(c[probe]).httpGet);
        if (Object.keys(get).length === 0) continue;
        expect(['/healthz', '/readyz'], `${d.file} ${probe}`).toContain(get.path);
        expect([...names, ...numbers], `${d.file} ${probe} port`).toContain(get.port);
      }
      const command = str(arr(c.args)[0]);
      if (command === 'ingress' || command === 'worker' || command === 'autoscaler') {
        expect(obj(obj(c.readinessProbe).httpGet).path, d.file).toBe('/readyz');
        expect(obj(obj(c.livenessProbe).httpGet).path, d.file).toBe('/healthz');
      }
    }
  });

  it('the ingress Service selects ingress pods only', () => {
    const services = kube('Service', 'deploy/kubernetes/base');
    expect(services.length).toBeGreaterThan(0);
    const matches = (selector: Obj, labels: Obj) =>
      Object.entries(selector).every(([k, v]) => labels[k] === v);
    for (const s of services) {
      const selector = obj(obj(s.doc.spec).selector);
      expect(Object.keys(selector).length).toBeGreaterThan(0);
      const selected = workloads.filter((w) => matches(selector, podLabels(w)));
      expect(selected.length, str(obj(s.doc.metadata).name)).toBeGreaterThan(0);
      for (const w of selected) expect(podLabels(w)['app.kubernetes.io/component']).toBe('ingress');
      for (const p of arr(obj(s.doc.spec).ports).map(obj)) {
        const target = p.targetPort;
        const ingressPorts = selected.flatMap((w) => containers(w).flatMap(portsOf));
        expect(ingressPorts.some((q) => q.name === target || q.containerPort === target)).toBe(true);
      }
    }
    const pdb = kube('PodDisruptionBudget')[0];
    expect(obj(obj(pdb?.doc.spec).selector).matchLabels).toEqual({
      'app.kubernetes.io/name': 'mcp-cluster',
      'app.kubernetes.io/component': 'ingress',
    });
  });

  it('labels every workload consistently, and selectors match their pods', () => {
    for (const { d } of ourContainers) {
      const labels = podLabels(d);
      expect(labels['app.kubernetes.io/name']).toBe('mcp-cluster');
      expect(['ingress', 'worker', 'autoscaler']).toContain(labels['app.kubernetes.io/component']);
      const args = containers(d).flatMap((c) => arr(c.args).map(str));
      if (args[0] === 'worker') expect(labels['mcp-cluster/pool']).toBe(flags(args).get('--pool'));
      const match = obj(obj(obj(d.doc.spec).selector).matchLabels);
      for (const [k, v] of Object.entries(match)) expect(labels[k], `${d.file} ${k}`).toBe(v);
    }
  });

  it('the ingress replicas and grace periods fit the drain settings', () => {
    for (const { d, c } of ourContainers) {
      const command = str(arr(c.args)[0]);
      const grace = Number(podSpec(d).terminationGracePeriodSeconds) * 1000;
      if (command === 'ingress') {
        expect(obj(d.doc.spec).replicas).toBe(2);
        expect(grace).toBeGreaterThan(cluster.ingress.drainGraceMs);
      }
      // The preStop runs before SIGTERM, inside the same grace period.
      if (command === 'worker')
        expect(grace, d.file).toBeGreaterThan(cluster.worker.drainGraceMs + preStopMs(c));
      // Worker pods set it per container: their GPU server images run as root.
      const nonRoot = obj(podSpec(d).securityContext).runAsNonRoot ?? obj(c.securityContext).runAsNonRoot;
      expect(nonRoot, d.file).toBe(true);
    }
  });
});

describe('GPU servers as sidecars of the worker pods', () => {
  /** The path the worker's own health probe asks of each backend kind (declared by its tool family). */
  const healthPaths: Record<string, string> = Object.fromEntries(
    families.backendKinds.map((kind) => [kind, families.backend(kind)?.healthPath ?? '']),
  );
  /** Backend kinds each GPU server image speaks. */
  const KINDS_BY_IMAGE: { image: RegExp; kinds: string[] }[] = [
    { image: /^vllm\/vllm-openai:/, kinds: ['openai-chat', 'openai-embeddings'] },
    { image: /^ghcr\.io\/huggingface\/text-embeddings-inference:/, kinds: ['tei'] },
    { image: /comfyui/, kinds: ['comfyui'] },
  ];
  /** The GPU nodes of each pool (the node labels the deployment guide names). */
  const NODES: Record<string, Obj> = {
    inference: { 'nvidia.com/gpu.product': 'NVIDIA-H100-80GB-HBM3' },
    embeddings: { 'nvidia.com/gpu.product': 'NVIDIA-L40S' },
    // The same GPUs, and on top of them spot nodes only (the spot pool's tests below).
    'embeddings-spot': { 'nvidia.com/gpu.product': 'NVIDIA-L40S' },
    diffusion: { 'mcp-cluster/gpu-role': 'diffusion' },
  };

  const prefix = cluster.autoscaler.kubernetes.deploymentPrefix;
  const workerDeployments = kube('Deployment').filter((d) =>
    str(obj(d.doc.metadata).name).startsWith(prefix),
  );
  /** Every container of the pod, init containers (where native sidecars live) included. */
  const allContainers = (d: Doc) => [...arr(podSpec(d).initContainers).map(obj), ...containers(d)];
  const gpus = (c: Obj, where: 'requests' | 'limits') => obj(obj(c.resources)[where])['nvidia.com/gpu'];
  const envOf = (c: Obj) =>
    Object.fromEntries(
      arr(c.env)
        .map(obj)
        .map((e) => [str(e.name), str(e.value)]),
    );
  /** `--name=value` or `--name value` of an argument list; undefined when absent. */
  const option = (args: string[], name: string): string | undefined => {
    for (let i = 0; i < args.length; i++) {
      const a = args[i] ?? '';
      if (a === name) return args[i + 1];
      if (a.startsWith(`${name}=`)) return a.slice(name.length + 1);
    }
    return undefined;
  };
  /** The probe's port as a number, resolving a port name against the container. */
  const probePort = (c: Obj, probe: string): number | undefined => {
    const port = obj(obj(c[probe]).httpGet).port;
    if (typeof port === 'number') return port;
    const found = arr(c.ports)
      .map(obj)
      .find((p) => p.name === port);
    return typeof found?.containerPort === 'number' ? found.containerPort : undefined;
  };

  /** The pool's worker Deployment, its worker container and its one GPU server. */
  function replica(pool: string) {
    const d = workerDeployments.find((w) => obj(w.doc.metadata).name === `${prefix}${pool}`);
    expect(d, `${prefix}${pool}`).toBeDefined();
    const all = allContainers(d!);
    const worker = all.find((c) => isOurs(c) && arr(c.args)[0] === 'worker');
    expect(worker, `${pool}: worker container`).toBeDefined();
    const withGpu = all.filter((c) => gpus(c, 'requests') !== undefined || gpus(c, 'limits') !== undefined);
    expect(
      withGpu.map((c) => c.name),
      `${pool}: exactly one container holds a GPU`,
    ).toHaveLength(1);
    return { d: d!, worker: worker!, server: withGpu[0]!, env: envOf(worker!) };
  }

  it('finds the health paths the worker probes', () => {
    expect(healthPaths).toEqual({
      'openai-chat': '/health',
      'openai-embeddings': '/health',
      tei: '/health',
      comfyui: '/system_stats',
      // The conformance fixtures' pool (opt-in, no GPU): its endpoint only answers the probe.
      conformance: '/health',
    });
  });

  it('every worker Deployment holds exactly one GPU, on its GPU server, as a native sidecar', () => {
    expect(workerDeployments.map((d) => obj(d.doc.metadata).name).sort()).toEqual(
      Object.keys(cluster.pools)
        .map((p) => `${prefix}${p}`)
        .sort(),
    );
    for (const pool of Object.keys(cluster.pools)) {
      const { d, worker, server } = replica(pool);
      expect(gpus(server, 'requests'), `${pool}: GPU request`).toBe(1);
      expect(gpus(server, 'limits'), `${pool}: GPU limit`).toBe(1);
      expect(isOurs(server), `${pool}: the GPU is not the worker's`).toBe(false);
      expect(gpus(worker, 'requests'), pool).toBeUndefined();
      // A native sidecar: started before the worker, stopped after it has drained.
      const init = arr(podSpec(d).initContainers).map(obj);
      expect(init, `${pool}: the GPU server is an init container`).toContain(server);
      expect(server.restartPolicy, `${pool}: restartPolicy Always makes it a sidecar`).toBe('Always');
    }
  });

  it('each pool lands on its GPU nodes', () => {
    for (const pool of Object.keys(cluster.pools)) {
      const { d } = replica(pool);
      expect(NODES[pool], `no expected nodes for pool ${pool}`).toBeDefined();
      expect(podSpec(d).nodeSelector, pool).toEqual(NODES[pool]);
      const tolerations = arr(podSpec(d).tolerations).map(obj);
      expect(
        tolerations.some((t) => t.key === 'nvidia.com/gpu' && t.operator === 'Exists'),
        `${pool}: tolerates the GPU nodes' taint`,
      ).toBe(true);
    }
  });

  it("the worker's MCP_CLUSTER_BACKENDS_<POOL> is its sidecar on 127.0.0.1, and it overrides the pool", () => {
    for (const pool of Object.keys(cluster.pools)) {
      const { d, server, env } = replica(pool);
      const url = env[backendsVariable(pool)];
      expect(url, `${pool}: ${backendsVariable(pool)}`).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
      const port = Number(new URL(url ?? 'http://x').port);
      const ports = arr(server.ports).map((p) => obj(p).containerPort);
      expect(ports, `${pool}: ${url} is not a port of ${str(server.name)}`).toContain(port);
      // No other container of the pod listens there (they share the pod's network namespace).
      const all = allContainers(d).flatMap((c) => arr(c.ports).map((p) => obj(p).containerPort));
      expect(new Set(all).size, `${pool}: container ports are distinct`).toBe(all.length);
      // Resolved as the worker resolves it: one endpoint, its sidecar, taking what one replica serves.
      const resolved = resolveConfig(clusterYaml, env, `${d.file} worker environment`).pools[pool];
      expect(resolved?.endpoints).toEqual([
        { url, maxConcurrency: cluster.pools[pool]?.scaling.replicaConcurrency },
      ]);
    }
  });

  it("the sidecar's readiness and startup probes ask the worker's health path for its backend kind", () => {
    for (const pool of Object.keys(cluster.pools)) {
      const { server, env } = replica(pool);
      const backend = cluster.pools[pool]?.backend ?? '';
      const path = healthPaths[backend];
      expect(path, backend).toBeDefined();
      const port = Number(new URL(env[backendsVariable(pool)] ?? 'http://x').port);
      for (const probe of ['readinessProbe', 'startupProbe']) {
        expect(obj(obj(server[probe]).httpGet).path, `${pool} ${probe}`).toBe(path);
        expect(probePort(server, probe), `${pool} ${probe} port`).toBe(port);
      }
      // Model download and load take minutes: the startup window must allow ten at least.
      const startup = obj(server.startupProbe);
      const windowS = Number(startup.periodSeconds ?? 10) * Number(startup.failureThreshold ?? 3);
      expect(windowS, `${pool}: startupProbe window`).toBeGreaterThanOrEqual(600);
    }
  });

  it("the sidecar's image speaks the pool's backend kind and is pinned", () => {
    for (const pool of Object.keys(cluster.pools)) {
      const { server } = replica(pool);
      const image = str(server.image);
      const match = KINDS_BY_IMAGE.find((k) => k.image.test(image));
      expect(match, `${pool}: unknown GPU server image ${image}`).toBeDefined();
      expect(match?.kinds, `${pool}: ${image}`).toContain(cluster.pools[pool]?.backend);
      const tag = /:([^/:@]+)$/.exec(image)?.[1];
      expect(tag, `${pool}: ${image} has a tag`).toBeDefined();
      expect(['latest', 'main', 'nightly'], `${pool}: ${image} is pinned`).not.toContain(tag);
    }
  });

  it("the vLLM sidecar serves the tools' model with the concurrency and context the pool plans for", () => {
    const { server } = replica('inference');
    const pool = cluster.pools.inference!;
    const args = arr(server.args).map(str);
    // `vllm serve <model>`; --model where the image's entrypoint is the API server module.
    const model = arr(server.command).map(str).join(' ') === 'vllm serve' ? args[0] : option(args, '--model');
    expect(model, 'the served model').toMatch(/^[\w.-]+\/[\w.-]+$/);
    expect(Number(option(args, '--max-num-seqs')), '--max-num-seqs').toBe(pool.scaling.replicaConcurrency);
    expect(Number(option(args, '--max-num-seqs'))).toBe(pool.gpu?.concurrentSequences);
    expect(Number(option(args, '--max-model-len')), '--max-model-len').toBe(pool.gpu?.contextTokens);
    expect(Number(option(args, '--port')), '--port').toBe(arr(server.ports).map(obj)[0]?.containerPort);
    const served = option(args, '--served-model-name');
    for (const tool of cluster.tools.filter((t) => t.pool === 'inference'))
      expect(tool.model, tool.name).toBe(served);
  });

  it("each TEI sidecar serves its pool's embed tool's model and batch size", () => {
    const teiPools = Object.values(cluster.pools)
      .filter((p) => p.backend === 'tei')
      .map((p) => p.name);
    expect(teiPools.sort()).toEqual(['embeddings', 'embeddings-spot']);
    for (const pool of teiPools) {
      const { server } = replica(pool);
      const args = arr(server.args).map(str);
      expect(Number(option(args, '--port')), `${pool} --port`).toBe(
        arr(server.ports).map(obj)[0]?.containerPort,
      );
      const embed = cluster.tools.find((t) => t.pool === pool && t.template === 'embed');
      expect(embed, `${pool}: an embed tool`).toBeDefined();
      expect(option(args, '--model-id'), pool).toBe(embed?.model);
      expect(Number(option(args, '--max-client-batch-size')), pool).toBe(
        embed && embedSettings.of(embed).batch.maxSize,
      );
    }
  });

  it('the ComfyUI sidecar finds the generate_image checkpoint in its models folder', () => {
    const { d, server } = replica('diffusion');
    expect(cluster.pools.diffusion?.scaling.replicaConcurrency, 'ComfyUI runs one prompt at a time').toBe(1);
    const models = arr(server.volumeMounts)
      .map(obj)
      .find((m) => str(m.mountPath).endsWith('/ComfyUI/models'));
    expect(models, 'a volume at ComfyUI/models').toBeDefined();
    // An init container before the sidecar fills the same volume with each tool's checkpoint.
    const init = arr(podSpec(d).initContainers).map(obj);
    const fetcher = init.slice(0, init.indexOf(server)).find((c) =>
      arr(c.volumeMounts)
        .map(obj)
        .some((m) => m.name === models?.name),
    );
    expect(fetcher, 'an init container fills the models volume before ComfyUI starts').toBeDefined();
    const mount = str(
      arr(fetcher?.volumeMounts)
        .map(obj)
        .find((m) => m.name === models?.name)?.mountPath,
    );
    const script = [...arr(fetcher?.command), ...arr(fetcher?.args)].map(str).join('\n');
    for (const tool of cluster.tools.filter((t) => t.pool === 'diffusion')) {
      expect(script, tool.name).toContain(`${mount}/checkpoints/${tool.model}`);
      expect(script, tool.name).toMatch(new RegExp(`https://\\S+/${tool.model.replace(/\./g, '\\.')}`));
    }
  });

  it('no manifest refers to the removed backend StatefulSets and Services', () => {
    expect(existsSync(join(deployDir, 'kubernetes/backends'))).toBe(false);
    expect(kube('StatefulSet')).toEqual([]);
    const services = kube('Service').map((s) => str(obj(s.doc.metadata).name));
    for (const name of ['vllm', 'tei', 'comfyui']) expect(services).not.toContain(name);
    for (const file of walk(deployDir)) {
      const text = readFileSync(file, 'utf8');
      const where = relative(root, file);
      expect(text, where).not.toMatch(/kubernetes\/backends/);
      expect(text, where).not.toMatch(/\b(vllm|tei|comfyui)-\d+\.(vllm|tei|comfyui)\b/);
    }
  });
});

describe('autoscaling', () => {
  it('the autoscaler Role grants patch on deployments/scale, bound to its ServiceAccount', () => {
    const role = kube('Role')[0]?.doc;
    const rule = arr(role?.rules)
      .map(obj)
      .find((r) => arr(r.resources).includes('deployments/scale'));
    expect(arr(rule?.apiGroups)).toContain('apps');
    expect(arr(rule?.verbs)).toEqual(expect.arrayContaining(['get', 'patch', 'update']));
    const binding = kube('RoleBinding')[0]?.doc;
    expect(obj(binding?.roleRef).name).toBe(obj(role?.metadata).name);
    const sa = str(obj(arr(binding?.subjects)[0]).name);
    const autoscaler = ourContainers.find(({ c }) => arr(c.args)[0] === 'autoscaler');
    expect(autoscaler).toBeDefined();
    expect(podSpec(autoscaler!.d).serviceAccountName).toBe(sa);
  });

  it('KEDA NATS triggers name the stream and consumers the code creates for namespace mcp', () => {
    const nats = read('services/nats/topology.ts');
    const streamTemplate = /this\.stream = `([^`]+)`/.exec(nats)?.[1];
    const durableTemplate = /durable\(pool: string, priority: Priority\): string \{\s*return `([^`]+)`/.exec(
      nats,
    )?.[1];
    expect(streamTemplate).toBeDefined();
    expect(durableTemplate).toBeDefined();
    const namespace = cluster.namespace;
    expect(namespace).toBe('mcp');
    const stream = streamTemplate!.replace(slot('namespace'), namespace);
    const consumer = (pool: string, priority: string) =>
      durableTemplate!.replace(slot('pool'), pool).replace(slot('priority'), priority);
    const objects = docs.filter(
      (d) => d.file === 'deploy/keda/nats/scaledobjects.yaml' && d.doc.kind === 'ScaledObject',
    );
    expect(objects.length).toBe(Object.keys(cluster.pools).length);
    for (const o of objects) {
      const spec = obj(o.doc.spec);
      const target = str(obj(spec.scaleTargetRef).name);
      const worker = ourContainers.find(({ d }) => obj(d.doc.metadata).name === target);
      expect(worker, target).toBeDefined();
      const pool = flags(arr(worker?.c.args).map(str)).get('--pool') ?? '';
      expect(spec.minReplicaCount, pool).toBe(cluster.pools[pool]?.scaling.minReplicas);
      expect(spec.maxReplicaCount, pool).toBe(cluster.pools[pool]?.scaling.maxReplicas);
      expect(spec.pollingInterval).toBe(5);
      expect(spec.cooldownPeriod).toBeTypeOf('number');
      const triggers = arr(spec.triggers).map(obj);
      const lagTriggers = triggers.filter((t) => t.type !== 'prometheus');
      expect(lagTriggers.map((t) => str(obj(t.metadata).consumer)).sort()).toEqual(
        PRIORITIES.map((p) => consumer(pool, p)).sort(),
      );
      // The interactive outstanding work (queued, running, held at the ingresses for their tenant's
      // fair-queue quota: the last two not in the stream's lag) over the slots of one replica, the
      // signal the built-in autoscaler and plan size on; the interactive lag triggers use the same k.
      const k = String(cluster.pools[pool]?.scaling.replicaConcurrency);
      const held = triggers.filter((t) => t.type === 'prometheus');
      expect(held, pool).toHaveLength(1);
      const heldMeta = obj(held[0]?.metadata);
      expect(str(heldMeta.query), pool).toBe(interactiveDemandQuery(pool, ',priority!="low"'));
      expect(str(heldMeta.serverAddress)).toBe(cluster.autoscaler.prometheusUrl);
      expect(heldMeta.threshold, pool).toBe(k);
      for (const priority of ['high', 'normal'])
        expect(
          obj(lagTriggers.find((t) => obj(t.metadata).consumer === consumer(pool, priority))?.metadata)
            .lagThreshold,
          `${pool} ${priority}`,
        ).toBe(k);
      expect(heldMeta.activationThreshold).toBe('0');
      for (const t of lagTriggers) {
        const m = obj(t.metadata);
        expect(t.type).toBe('nats-jetstream');
        expect(m.stream).toBe(stream);
        expect(str(m.natsServerMonitoringEndpoint)).toMatch(/:8222$/);
        expect(m.account).toBeTruthy();
        expect(Number(m.lagThreshold)).toBeGreaterThan(0);
      }
    }
  });

  it('KEDA BullMQ triggers query the queue depth of their own pool', () => {
    const objects = docs.filter(
      (d) => d.file === 'deploy/keda/bullmq/scaledobjects.yaml' && d.doc.kind === 'ScaledObject',
    );
    expect(objects.length).toBe(Object.keys(cluster.pools).length);
    for (const o of objects) {
      const spec = obj(o.doc.spec);
      const pool = str(obj(obj(o.doc.metadata).labels)['mcp-cluster/pool']);
      expect(str(obj(spec.scaleTargetRef).name)).toBe(`mcp-cluster-worker-${pool}`);
      expect(spec.minReplicaCount, pool).toBe(cluster.pools[pool]?.scaling.minReplicas);
      expect(spec.maxReplicaCount, pool).toBe(cluster.pools[pool]?.scaling.maxReplicas);
      const triggers = arr(spec.triggers).map(obj);
      expect(triggers.length, pool).toBeGreaterThan(0);
      for (const trigger of triggers) {
        expect(trigger.type).toBe('prometheus');
        const query = str(obj(trigger.metadata).query);
        expect(query, pool).toMatch(new RegExp(`mcp_cluster_queue_depth\\{pool="${pool}"[,}]`));
        // Every series the query reads is its own pool's.
        for (const m of query.matchAll(/\{pool="([^"]+)"/g)) expect(m[1], query).toBe(pool);
      }
      // The interactive trigger counts the calls held at the ingresses too (batch chunks are never
      // held, so the low-priority backlog trigger does not).
      const queries = triggers.map((t) => str(obj(t.metadata).query));
      const interactive = queries.filter((q) => !q.includes('priority="low"'));
      expect(interactive, pool).toHaveLength(1);
      expect(interactive[0]).toBe(interactiveDemandQuery(pool, queries.length > 1 ? ',priority!="low"' : ''));
      const threshold = triggers.find((t) => str(obj(t.metadata).query) === interactive[0])?.metadata;
      expect(obj(threshold).threshold, pool).toBe(String(cluster.pools[pool]?.scaling.replicaConcurrency));
      for (const q of queries.filter((x) => x.includes('priority="low"'))) {
        expect(q).not.toContain('mcp_cluster_tenant_held_calls');
      }
    }
  });
});

/**
 * The interactive outstanding work of `pool` as the KEDA Prometheus triggers query it: the broker's
 * queue depth and calls in flight (each max across ingress replicas per priority, then summed;
 * `priorities` narrows the selector) plus the calls held at the ingresses for their tenant's
 * fair-queue quota (summed over replicas and tenants).
 * Each side `or vector(0)`: in PromQL `A + B` is empty when either side is, and the held-calls gauge
 * has no series until a replica has held a call, so without it KEDA would read no value at all.
 */
function interactiveDemandQuery(pool: string, priorities: string): string {
  return (
    `(sum(max by (priority) (mcp_cluster_queue_depth{pool="${pool}"${priorities}})) or vector(0))` +
    ` + (sum(max by (priority) (mcp_cluster_queue_inflight{pool="${pool}"${priorities}})) or vector(0))` +
    ` + (sum(mcp_cluster_tenant_held_calls{pool="${pool}"}) or vector(0))`
  );
}

describe('the built-in autoscaler on Kubernetes', () => {
  const autoscaler = () => {
    const found = ourContainers.filter(({ c }) => arr(c.args)[0] === 'autoscaler');
    expect(found, 'one container runs `autoscaler`').toHaveLength(1);
    return found[0]!;
  };
  const envOf = (c: Obj) =>
    Object.fromEntries(
      arr(c.env)
        .map(obj)
        .map((e) => [str(e.name), str(e.value)]),
    );
  /** The namespace the base's objects land in (the provider's default: the pod's own). */
  const baseNamespace = str(baseKustomization.namespace);
  /** Components and overlays by path. */
  const doc = (file: string) => docs.find((d) => d.file === file)?.doc ?? {};

  it('runs the real `autoscaler` subcommand, once, as the only decision maker', () => {
    const { d, c } = autoscaler();
    expect(cliCommands.has('autoscaler')).toBe(true);
    expect(cliUsage).toMatch(/^ {2}mcp-cluster autoscaler /m);
    expect(read(d.file)).not.toMatch(/NOT YET IMPLEMENTED/);
    expect(obj(d.doc.spec).replicas).toBe(1);
    expect(obj(obj(d.doc.spec).strategy).type).toBe('Recreate');
    expect(read(d.file)).toMatch(/two would[\s\S]*fight/i);
    const config = flags(arr(c.args).map(str)).get('--config');
    expect(config).toBe(`/etc/mcp-cluster/${configFile}`);
  });

  it('uses the kubernetes provider and serves its probes and metrics where the config says', () => {
    const { c } = autoscaler();
    const env = envOf(c);
    expect(env.MCP_CLUSTER_AUTOSCALER_PROVIDER).toBe('kubernetes');
    const resolved = resolveConfig(clusterYaml, env, 'autoscaler environment');
    expect(resolved.autoscaler.provider).toBe('kubernetes');
    // No environment override exists for autoscaler.host: kubelet probes need the pod IP.
    expect(resolved.autoscaler.host).toBe('0.0.0.0');
    const port = arr(c.ports)
      .map(obj)
      .find((p) => p.name === obj(obj(c.readinessProbe).httpGet).port);
    expect(port?.containerPort).toBe(resolved.autoscaler.port);
    expect(obj(obj(c.livenessProbe).httpGet).path).toBe('/healthz');
    expect(obj(obj(c.readinessProbe).httpGet).path).toBe('/readyz');
  });

  it('its Role, in its own namespace, allows get and patch on deployments/scale and nothing cluster-wide', () => {
    expect(kube('ClusterRole')).toHaveLength(0);
    expect(kube('ClusterRoleBinding')).toHaveLength(0);
    const role = kube('Role').find((r) => obj(r.doc.metadata).name === 'mcp-cluster-autoscaler')?.doc;
    const rules = arr(role?.rules).map(obj);
    const verbsOn = (resource: string) =>
      rules
        .filter((r) => arr(r.apiGroups).includes('apps') && arr(r.resources).includes(resource))
        .flatMap((r) => arr(r.verbs).map(str));
    expect(verbsOn('deployments/scale')).toEqual(expect.arrayContaining(['get', 'patch']));
    expect(verbsOn('deployments')).toEqual(['get']);
    for (const r of rules) expect(arr(r.verbs), 'no wildcard verbs').not.toContain('*');
    // The provider's default namespace is the pod's own: the kustomization puts the pod, the Role
    // and the worker Deployments in the same one.
    expect(cluster.autoscaler.kubernetes.namespace).toBe('');
    expect(baseNamespace).toBe('mcp-cluster');
  });

  it('every pool of the configuration has its Deployment <deploymentPrefix><pool> in workers.yaml', () => {
    const prefix = cluster.autoscaler.kubernetes.deploymentPrefix;
    const workerDeployments = kube('Deployment', 'deploy/kubernetes/base').filter(
      (d) => d.file === 'deploy/kubernetes/base/workers.yaml',
    );
    for (const pool of Object.keys(cluster.pools)) {
      const d = workerDeployments.find((w) => obj(w.doc.metadata).name === `${prefix}${pool}`);
      expect(d, `${prefix}${pool}`).toBeDefined();
      const args = containers(d!).flatMap((c) => arr(c.args).map(str));
      expect(args[0]).toBe('worker');
      expect(flags(args).get('--pool')).toBe(pool);
      // The autoscaler owns spec.replicas; a value here would be re-applied over its decisions.
      expect(obj(d!.doc.spec).replicas, `${prefix}${pool}`).toBeUndefined();
      // Scale-down is a SIGTERM after the preStop: the worker must finish draining before SIGKILL.
      const graceMs = Number(podSpec(d!).terminationGracePeriodSeconds) * 1000;
      const worker = containers(d!).find((c) => arr(c.args)[0] === 'worker') ?? {};
      expect(graceMs, `${prefix}${pool}`).toBeGreaterThan(cluster.worker.drainGraceMs + preStopMs(worker));
    }
    expect(workerDeployments).toHaveLength(Object.keys(cluster.pools).length);
  });

  it('the configuration resolves, with an autoscaler section and scaling and GPU figures per pool', () => {
    expect(() => resolveConfig(clusterYaml, {}, configFile)).not.toThrow();
    expect(cluster.autoscaler.provider).toBe('kubernetes');
    expect(cluster.autoscaler.intervalMs).toBe(2000);
    expect(cluster.autoscaler.prometheusUrl).toMatch(/^http:\/\/.+:9090$/);
    expect(cluster.pools.inference?.scaling).toMatchObject({
      minReplicas: 1,
      maxReplicas: 8,
      replicaConcurrency: 16,
    });
    expect(cluster.pools.embeddings?.scaling).toMatchObject({ minReplicas: 0, maxReplicas: 4 });
    expect(cluster.pools.diffusion?.scaling).toMatchObject({
      minReplicas: 0,
      maxReplicas: 4,
      replicaConcurrency: 1,
    });
    expect(cluster.pools.inference?.gpu).toEqual({
      modelParamsBillions: 8,
      bytesPerParam: 2,
      kvCacheBytesPerToken: 128 * 1024,
      contextTokens: 8192,
      concurrentSequences: 16,
    });
    expect(cluster.pools.embeddings?.scaling.replicaConcurrency).toBe(256);
  });

  it('the KEDA overlays add the ScaledObjects and turn the built-in autoscaler into `metrics`', () => {
    const overlays = [
      { overlay: 'deploy/kubernetes/overlays/keda', base: '../../base', component: '../../../keda/nats' },
      {
        overlay: 'deploy/kubernetes/overlays/bullmq-keda',
        base: '../bullmq',
        component: '../../../keda/bullmq',
      },
    ];
    for (const { overlay, base, component } of overlays) {
      const k = doc(`${overlay}/kustomization.yaml`);
      expect(arr(k.resources), overlay).toEqual([base]);
      expect(arr(k.components), overlay).toEqual([component]);
      const dir = join(overlay, component).replace(/\\/g, '/');
      const c = doc(`${dir}/kustomization.yaml`);
      expect(c.kind).toBe('Component');
      expect(arr(c.resources)).toEqual(['scaledobjects.yaml']);
      const patches = arr(c.patches).map((p) => parseAllDocuments(str(obj(p).patch))[0]?.toJS() as Obj);
      const patched = patches.find(
        (p) => p.kind === 'Deployment' && obj(p.metadata).name === 'mcp-cluster-autoscaler',
      );
      expect(patched, `${dir}: patches the autoscaler`).toBeDefined();
      const container = arr(obj(obj(obj(patched?.spec).template).spec).containers)
        .map(obj)
        .find((x) => x.name === autoscaler().c.name);
      const env = envOf(container ?? {});
      expect(env.MCP_CLUSTER_AUTOSCALER_PROVIDER, dir).toBe('metrics');
      expect(resolveConfig(clusterYaml, env).autoscaler.provider).toBe('metrics');
    }
  });

  it('KEDA on BullMQ asks the same Prometheus the autoscaler reads', () => {
    const objects = docs.filter(
      (d) => d.file === 'deploy/keda/bullmq/scaledobjects.yaml' && d.doc.kind === 'ScaledObject',
    );
    for (const o of objects) {
      for (const t of arr(obj(o.doc.spec).triggers).map(obj)) {
        expect(str(obj(t.metadata).serverAddress)).toBe(cluster.autoscaler.prometheusUrl);
      }
    }
  });

  it('compose runs the autoscaler as a metrics provider (compose cannot resize itself)', () => {
    const service = composeOurs.find(
      (x) => x.file === 'deploy/compose.yaml' && arr(x.s.command)[0] === 'autoscaler',
    );
    expect(service).toBeDefined();
    const env = obj(service?.s.environment);
    expect(env.MCP_CLUSTER_AUTOSCALER_PROVIDER).toBe('metrics');
    expect(flags(arr(service?.s.command).map(str)).get('--port')).toBe(str(env.MCP_CLUSTER_AUTOSCALER_PORT));
    const bullmq = composeServices.find(
      (x) => x.file === 'deploy/compose.bullmq.yaml' && x.name === service?.name,
    );
    expect(obj(bullmq?.s.environment).MCP_CLUSTER_BROKER_URL).toBe('redis://redis:6379');
  });
});

describe('the spot batch pool', () => {
  /** Spot labels of the providers named in workers.yaml: label → the value spot nodes carry. */
  const SPOT_LABELS: Record<string, string> = {
    'cloud.google.com/gke-spot': 'true',
    'eks.amazonaws.com/capacityType': 'SPOT',
    'kubernetes.azure.com/scalesetpriority': 'spot',
  };
  /** The taints spot nodes carry by default on AKS and GKE Autopilot. */
  const SPOT_TAINTS = [
    { key: 'kubernetes.azure.com/scalesetpriority', value: 'spot' },
    { key: 'cloud.google.com/gke-spot', value: 'true' },
  ];
  /** The spot notice of GCP and Azure (AWS gives 2 minutes): the whole stop must fit in it. */
  const SPOT_NOTICE_MS = 30_000;
  const prefix = cluster.autoscaler.kubernetes.deploymentPrefix;
  const batchPool = cluster.batch.pool;
  const deployment = (pool: string) =>
    kube('Deployment', 'deploy/kubernetes/base').find((d) => obj(d.doc.metadata).name === `${prefix}${pool}`);
  /** The required node affinity's terms as (key, values) per term. */
  const requiredTerms = (d: Doc) =>
    arr(
      obj(obj(obj(podSpec(d).affinity).nodeAffinity).requiredDuringSchedulingIgnoredDuringExecution)
        .nodeSelectorTerms,
    ).map((t) => arr(obj(t).matchExpressions).map(obj));
  const isSpotTerm = (term: Obj[]) =>
    term.length === 1 &&
    SPOT_LABELS[str(term[0]?.key)] !== undefined &&
    term[0]?.operator === 'In' &&
    arr(term[0]?.values).includes(SPOT_LABELS[str(term[0]?.key)]);

  it('batch.pool names a pool of cluster.yaml that serves an embed tool, apart from interactive embed', () => {
    expect(batchPool).toBe('embeddings-spot');
    const pool = cluster.pools[batchPool];
    expect(pool, `batch.pool ${batchPool}`).toBeDefined();
    const bulk = cluster.tools.filter((t) => t.pool === batchPool && t.template === 'embed');
    expect(bulk.map((t) => t.name)).toEqual(['embed_bulk']);
    // Interactive embed stays on the on-demand pool, with the same model, so vectors compare.
    const embed = cluster.tools.find((t) => t.name === 'embed');
    expect(embed?.pool).toBe('embeddings');
    expect(bulk[0]?.model).toBe(embed?.model);
    expect(pool?.backend).toBe(cluster.pools.embeddings?.backend);
    // Scaled on its own backlog: to zero without a job, a batch drain target of its own.
    expect(pool?.scaling).toMatchObject({ minReplicas: 0, batchDrainTargetMs: 3_600_000 });
    expect(pool?.scaling.maxReplicas).toBeGreaterThanOrEqual(1);
  });

  it("its workers run on spot nodes only: required affinity on the providers' spot labels, and their taints tolerated", () => {
    const d = deployment(batchPool);
    expect(d, `${prefix}${batchPool}`).toBeDefined();
    const terms = requiredTerms(d!);
    // ORed terms, each one provider's spot label, so the pool schedules on whichever cloud it runs.
    for (const term of terms)
      expect(
        isSpotTerm(term) ||
          term[0]?.key === 'cloud.google.com/gke-preemptible' ||
          term[0]?.key === 'karpenter.sh/capacity-type',
        JSON.stringify(term),
      ).toBe(true);
    for (const label of Object.keys(SPOT_LABELS)) {
      expect(
        terms.some((t) => t[0]?.key === label),
        `a term on ${label}`,
      ).toBe(true);
    }
    const tolerations = arr(podSpec(d!).tolerations).map(obj);
    for (const taint of SPOT_TAINTS) {
      expect(
        tolerations.some(
          (t) =>
            t.key === taint.key &&
            t.value === taint.value &&
            t.operator === 'Equal' &&
            t.effect === 'NoSchedule',
        ),
        `tolerates ${taint.key}=${taint.value}:NoSchedule`,
      ).toBe(true);
    }
    expect(tolerations.some((t) => t.key === 'nvidia.com/gpu')).toBe(true);
  });

  it('the interactive pools stay off spot nodes', () => {
    for (const pool of Object.keys(cluster.pools).filter((p) => p !== batchPool)) {
      const d = deployment(pool)!;
      expect(requiredTerms(d), pool).toEqual([]);
      const keys = arr(podSpec(d).tolerations).map((t) => str(obj(t).key));
      for (const label of Object.keys(SPOT_LABELS)) expect(keys, pool).not.toContain(label);
    }
  });

  it('stops within the 30 s spot notice: preStop + worker.drainGrace < terminationGracePeriodSeconds ≤ 30 s', () => {
    const d = deployment(batchPool)!;
    const worker = containers(d).find((c) => arr(c.args)[0] === 'worker')!;
    const preStop = preStopMs(worker);
    expect(preStop, 'a preStop, counted in the budget').toBe(5000);
    expect(cluster.worker.drainGraceMs).toBe(20_000);
    const graceMs = Number(podSpec(d).terminationGracePeriodSeconds) * 1000;
    expect(graceMs).toBeLessThanOrEqual(SPOT_NOTICE_MS);
    expect(preStop + cluster.worker.drainGraceMs).toBeLessThan(graceMs);
    // The manifest says so where the numbers are.
    expect(read(d.file)).toMatch(/preStop 5s \+ worker\.drainGrace 20s = 25s < 30s/);
  });

  it('the KEDA overlays scale it on its backlog: every priority on NATS, queued + running low calls on BullMQ', () => {
    const scaled = (file: string) =>
      docs.find(
        (d) =>
          d.file === file &&
          d.doc.kind === 'ScaledObject' &&
          obj(obj(d.doc.spec).scaleTargetRef).name === `${prefix}${batchPool}`,
      );
    const nats = scaled('deploy/keda/nats/scaledobjects.yaml');
    expect(nats, 'NATS ScaledObject').toBeDefined();
    const thresholds = Object.fromEntries(
      arr(obj(nats!.doc.spec).triggers).map((t) => {
        const m = obj(obj(t).metadata);
        return [str(m.consumer), Number(m.lagThreshold)];
      }),
    );
    // A replica works off far more batch chunks within batchDrainTarget than interactive calls wait.
    expect(thresholds[`${batchPool}_low`]).toBeGreaterThan(100 * (thresholds[`${batchPool}_normal`] ?? 0));
    const bullmq = scaled('deploy/keda/bullmq/scaledobjects.yaml');
    expect(bullmq, 'BullMQ ScaledObject').toBeDefined();
    const queries = arr(obj(bullmq!.doc.spec).triggers).map((t) => str(obj(obj(t).metadata).query));
    expect(queries).toContainEqual(
      expect.stringContaining(`mcp_cluster_queue_depth{pool="${batchPool}",priority="low"}`),
    );
    expect(queries).toContainEqual(
      expect.stringContaining(`mcp_cluster_queue_inflight{pool="${batchPool}",priority="low"}`),
    );
    for (const o of [nats!, bullmq!]) expect(obj(o.doc.spec).minReplicaCount).toBe(0);
  });
});

describe('kustomize builds', () => {
  const kubectl = (() => {
    try {
      execFileSync('kubectl', ['version', '--client'], { stdio: 'ignore' });
      return true;
    } catch {
      return false;
    }
  })();

  it.skipIf(!kubectl).each([
    ['deploy/kubernetes/base', 0],
    ['deploy/kubernetes/overlays/bullmq', 0],
    ['deploy/kubernetes/overlays/keda', 1],
    ['deploy/kubernetes/overlays/bullmq-keda', 1],
  ])('kubectl kustomize %s renders every worker Deployment', (dir, scaledObjects) => {
    const text = execFileSync('kubectl', ['kustomize', join(root, dir)], { encoding: 'utf8' });
    const rendered = parseAllDocuments(text).map((d) => obj(d.toJS()));
    const name = (o: Obj) => str(obj(o.metadata).name);
    const prefix = cluster.autoscaler.kubernetes.deploymentPrefix;
    const workers = rendered.filter((o) => o.kind === 'Deployment' && name(o).startsWith(prefix)).map(name);
    expect(workers.sort()).toEqual(
      Object.keys(cluster.pools)
        .map((p) => `${prefix}${p}`)
        .sort(),
    );
    const objects = rendered.filter((o) => o.kind === 'ScaledObject').map(name);
    expect(objects.sort()).toEqual(scaledObjects ? workers.sort() : []);
  });
});

describe('metric names', () => {
  const exported = exportedMetricNames();

  it('finds the exported metrics in the source', () => {
    for (const n of [
      'mcp_cluster_queue_depth',
      'mcp_cluster_call_duration_seconds_bucket',
      'mcp_cluster_batch_size',
    ]) {
      expect(exported.has(n), n).toBe(true);
    }
  });

  it.each([
    'deploy/prometheus/rules.yaml',
    'deploy/keda/bullmq/scaledobjects.yaml',
    'deploy/keda/nats/scaledobjects.yaml',
    'deploy/grafana/dashboard.json',
  ])('%s references only metrics the code exports', (file) => {
    // Comments may mention planned metrics; only the queries count.
    const text = file.endsWith('.json')
      ? read(file)
      : docs
          .filter((d) => d.file === file)
          .map((d) => JSON.stringify(d.doc))
          .join('\n');
    const refs = metricRefs(text);
    expect(refs.length).toBeGreaterThan(0);
    for (const r of refs) expect(exported.has(r), `${file}: ${r}`).toBe(true);
  });

  it('the alert rules cover backlog, oldest wait, backend health and lost calls', () => {
    const rules = docs
      .filter((d) => d.file === 'deploy/prometheus/rules.yaml')
      .flatMap((d) => arr(d.doc.groups))
      .flatMap((g) => arr(obj(g).rules))
      .map(obj);
    const exprs = rules.map((r) => str(r.expr)).join('\n');
    expect(exprs).toMatch(/deriv\(mcp_cluster_queue_depth/);
    expect(exprs).toMatch(/mcp_cluster_queue_oldest_age_seconds\) > 30/);
    expect(exprs).toMatch(/mcp_cluster_backend_healthy\) == 0/);
    expect(exprs).toMatch(/mcp_cluster_worker_calls_total\{outcome="lost"\}/);
    for (const r of rules) {
      expect(r.alert).toBeTruthy();
      expect(obj(r.labels).severity).toBeTruthy();
    }
  });

  it('the alert rules cover tenants shed as overloaded and a failing shares ledger', () => {
    const rules = docs
      .filter((d) => d.file === 'deploy/prometheus/rules.yaml')
      .flatMap((d) => arr(d.doc.groups))
      .flatMap((g) => arr(obj(g).rules))
      .map(obj);
    const overloaded = rules.find((r) =>
      /mcp_cluster_tenant_rejected_total\{reason="overloaded"\}/.test(str(r.expr)),
    );
    expect(overloaded?.for).toBe('10m');
    expect(str(overloaded?.expr)).toMatch(/sum by \(pool, tenant\)/);
    expect(rules.some((r) => /mcp_cluster_share_ledger_errors_total/.test(str(r.expr)))).toBe(true);
  });

  it('the dashboard has a tenant view: a tenant variable and admission, wait, cost share and held panels', () => {
    const dash = JSON.parse(read('deploy/grafana/dashboard.json')) as Obj;
    const variables = arr(obj(dash.templating).list).map(obj);
    const tenant = variables.find((v) => v.name === 'tenant');
    expect(str(tenant?.definition)).toMatch(/label_values\(mcp_cluster_tenant_[a-z_]+, tenant\)/);
    expect(tenant?.includeAll).toBe(true);
    const exprs = arr(dash.panels)
      .flatMap((p) => arr(obj(p).targets))
      .map((t) => str(obj(t).expr));
    const tenantExprs = exprs.filter((e) => e.includes('mcp_cluster_tenant_'));
    for (const metric of [
      'mcp_cluster_tenant_admitted_total',
      'mcp_cluster_tenant_rejected_total',
      'mcp_cluster_tenant_queue_wait_seconds_bucket',
      'mcp_cluster_tenant_cost_served_total',
      'mcp_cluster_tenant_held_calls',
    ]) {
      const uses = tenantExprs.filter((e) => e.includes(metric));
      expect(uses.length, metric).toBeGreaterThan(0);
      for (const e of uses) expect(e, metric).toMatch(/tenant=~"\$tenant"/);
    }
    expect(
      exprs.some((e) => /sum by \(pool, tenant, reason\) \(rate\(mcp_cluster_tenant_rejected_total/.test(e)),
    ).toBe(true);
    expect(
      exprs.some((e) =>
        /histogram_quantile\(0\.95, sum by \(le, pool, tenant\) \(rate\(mcp_cluster_tenant_queue_wait_seconds_bucket/.test(
          e,
        ),
      ),
    ).toBe(true);
  });

  it('the dashboard shows call duration quantiles from the histogram', () => {
    const text = read('deploy/grafana/dashboard.json');
    expect(text).toMatch(
      /histogram_quantile\(0\.5, sum by \(le, tool\) \(rate\(mcp_cluster_call_duration_seconds_bucket/,
    );
    expect(text).toMatch(
      /histogram_quantile\(0\.99, sum by \(le, tool\) \(rate\(mcp_cluster_call_duration_seconds_bucket/,
    );
  });
});
