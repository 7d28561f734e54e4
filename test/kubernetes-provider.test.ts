/**
 * The `kubernetes` scaling provider against a stand-in for the Kubernetes API server: a small HTTP
 * server in this file that plays the apps/v1 `deployments/<name>/scale` subresource (GET and PATCH) the
 * way kube-apiserver answers it (Scale objects, Status bodies on errors, bearer-token auth). It is NOT a
 * real cluster (none can be reached from this machine); it is stricter than kube-apiserver in one
 * place: it accepts only `application/merge-patch+json` patches (a real server also accepts JSON patch
 * and strategic merge patch, but would reject this provider's body under the JSON patch type the
 * generated client picks by default).
 *
 * The provider is pointed at it with a kubeconfig file in a temp dir, through the `kubeconfig` option
 * or the KUBECONFIG variable, exactly as it would read one on an operator's machine.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createServer, type Server } from 'node:https';
import { type AddressInfo, createServer as createTcpServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { kubernetesProvider } from '../services/autoscaler/index.js';
import { ClusterError, type ResolvedConfig } from '../services/core/index.js';
import { resolveConfig } from './support/families.js';
import { selfSignedCertificate } from './support/tls.js';

const TOKEN = 'stand-in-token';
const NAMESPACE = 'mcp-cluster';

interface Reply {
  code: number;
  text: string;
  type: string;
}

interface Recorded {
  method: string;
  path: string;
  query: URLSearchParams;
  contentType: string;
  authorization: string;
  body: string;
}

/** A Kubernetes `Status` failure body, as kube-apiserver writes it. */
function status(code: number, reason: string, message: string): string {
  return JSON.stringify({
    kind: 'Status',
    apiVersion: 'v1',
    metadata: {},
    status: 'Failure',
    message,
    reason,
    code,
  });
}

/**
 * The stand-in API server. `deployments` maps `<namespace>/<name>` to spec.replicas; names starting
 * with `forbidden-` answer 403, `flaky-` 500 once, `broken-` always 500, `slow-` never, `garbled-` a
 * 200 that is not JSON, `bogus-` a Scale whose replicas is a string.
 */
class StandInApiServer {
  readonly requests: Recorded[] = [];
  readonly deployments = new Map<string, number>();
  private readonly flakyFailed = new Set<string>();
  private server: Server | undefined;
  url = '';

  /** Serves HTTPS with `tls` (kube-apiserver serves nothing else; the client refuses plain http://). */
  async start(tls: { key: string; cert: string }): Promise<void> {
    this.server = createServer(tls, (req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => this.answer(req, res, Buffer.concat(chunks).toString('utf8')));
    });
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    this.url = `https://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  async stop(): Promise<void> {
    this.server?.closeAllConnections();
    await new Promise<void>((resolve) => this.server?.close(() => resolve()) ?? resolve());
  }

  private answer(req: IncomingMessage, res: ServerResponse, body: string): void {
    const reply = this.reply(req, body);
    if (!reply) return; // leave the request hanging, like an API server that stopped answering
    res.writeHead(reply.code, { 'content-type': reply.type });
    res.end(reply.text);
  }

  /** The answer to one request; undefined: no answer at all. */
  private reply(req: IncomingMessage, body: string): Reply | undefined {
    const url = new URL(req.url ?? '/', 'http://stand-in');
    this.requests.push({
      method: req.method ?? '',
      path: url.pathname,
      query: url.searchParams,
      contentType: req.headers['content-type'] ?? '',
      authorization: req.headers.authorization ?? '',
      body,
    });
    const send = (code: number, text: string, type = 'application/json'): Reply => ({ code, text, type });
    if (req.headers.authorization !== `Bearer ${TOKEN}`) {
      return send(401, status(401, 'Unauthorized', 'Unauthorized'));
    }
    const m = /^\/apis\/apps\/v1\/namespaces\/([^/]+)\/deployments\/([^/]+)\/scale$/.exec(url.pathname);
    if (!m) return send(404, status(404, 'NotFound', 'the server could not find the requested resource'));
    const [, namespace = '', name = ''] = m;
    const key = `${namespace}/${name}`;
    const verb = req.method === 'PATCH' ? 'patch' : 'get';
    if (name.startsWith('forbidden-')) {
      return send(
        403,
        status(
          403,
          'Forbidden',
          `deployments.apps "${name}" is forbidden: User "system:serviceaccount:${namespace}:mcp-cluster-autoscaler" ` +
            `cannot ${verb} resource "deployments/scale" in API group "apps" in the namespace "${namespace}"`,
        ),
      );
    }
    if (name.startsWith('broken-'))
      return send(500, status(500, 'InternalError', 'etcdserver: leader changed'));
    if (name.startsWith('flaky-') && !this.flakyFailed.has(key)) {
      this.flakyFailed.add(key);
      return send(500, status(500, 'InternalError', 'etcdserver: request timed out'));
    }
    if (name.startsWith('slow-')) return undefined; // never answers
    if (name.startsWith('garbled-')) return send(200, '<html>proxy login</html>', 'text/html');
    if (name.startsWith('bogus-'))
      return send(200, JSON.stringify({ kind: 'Scale', spec: { replicas: 'lots' } }));
    if (!this.deployments.has(key)) {
      return send(404, status(404, 'NotFound', `deployments.apps "${name}" not found`));
    }
    if (req.method === 'PATCH') {
      if (req.headers['content-type'] !== 'application/merge-patch+json') {
        return send(
          415,
          status(
            415,
            'UnsupportedMediaType',
            `the stand-in accepts only application/merge-patch+json patches`,
          ),
        );
      }
      let replicas: unknown;
      try {
        replicas = (JSON.parse(body) as { spec?: { replicas?: unknown } }).spec?.replicas;
      } catch {
        return send(400, status(400, 'BadRequest', 'the body is not JSON'));
      }
      if (typeof replicas !== 'number')
        return send(422, status(422, 'Invalid', 'spec.replicas: Invalid value'));
      this.deployments.set(key, replicas);
    } else if (req.method !== 'GET') {
      return send(405, status(405, 'MethodNotAllowed', 'the server does not allow this method'));
    }
    const replicas = this.deployments.get(key) ?? 0;
    // Kubernetes omits spec.replicas when it is 0 (omitempty).
    return send(
      200,
      JSON.stringify({
        kind: 'Scale',
        apiVersion: 'autoscaling/v1',
        metadata: { name, namespace },
        spec: replicas === 0 ? {} : { replicas },
        status: { replicas, selector: `mcp-cluster/pool=${name}` },
      }),
    );
  }

  scaleRequests(name: string, method?: string): Recorded[] {
    return this.requests.filter(
      (r) => r.path.includes(`/deployments/${name}/scale`) && (!method || r.method === method),
    );
  }
}

const dir = mkdtempSync(join(tmpdir(), 'mcp-k8s-provider-'));
const api = new StandInApiServer();

let caData = '';

/** A kubeconfig for `server` with a bearer-token user, trusting the stand-in's certificate. */
function kubeconfig(file: string, server: string, token = TOKEN, ca: string | null = caData): string {
  const path = join(dir, file);
  writeFileSync(
    path,
    [
      'apiVersion: v1',
      'kind: Config',
      'clusters:',
      `  - name: stand-in`,
      '    cluster:',
      `      server: ${server}`,
      ...(ca === null ? [] : [`      certificate-authority-data: ${ca}`]),
      'users:',
      '  - name: autoscaler',
      '    user:',
      `      token: ${token}`,
      'contexts:',
      '  - name: stand-in',
      '    context: { cluster: stand-in, user: autoscaler }',
      'current-context: stand-in',
      '',
    ].join('\n'),
  );
  return path;
}

/** A configuration with the given pools (each on openai-chat; the backend does not matter here). */
function clusterConfig(
  pools: string[],
  kubernetes: Record<string, string> = { namespace: NAMESPACE },
): ResolvedConfig {
  const lines = [
    'autoscaler:',
    '  provider: kubernetes',
    ...(Object.keys(kubernetes).length === 0 ? [] : ['  kubernetes:']),
    ...Object.entries(kubernetes).map(([k, v]) => `    ${k}: "${v}"`),
    'pools:',
    ...pools.flatMap((p) => [`  ${p}:`, '    backend: openai-chat']),
    'tools:',
    `  - { name: generate_text, template: generate_text, pool: ${pools[0]}, model: m }`,
  ];
  return resolveConfig(`${lines.join('\n')}\n`);
}

/** Awaits `promise`, expecting a ClusterError, and returns it. */
async function clusterError(promise: Promise<unknown>): Promise<ClusterError> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err, 'expected a ClusterError').toBeInstanceOf(ClusterError);
  return err as ClusterError;
}

const fast = { retryDelayMs: 10 };

beforeAll(async () => {
  const tls = selfSignedCertificate(dir, 'stand-in-apiserver');
  caData = Buffer.from(tls.cert).toString('base64');
  await api.start(tls);
});

afterAll(async () => {
  await api.stop();
  rmSync(dir, { recursive: true, force: true });
});

afterEach(() => {
  api.requests.length = 0;
});

describe('reading and setting replicas', () => {
  it('reads spec.replicas of the scale subresource, 0 when Kubernetes omits it', async () => {
    api.deployments.set(`${NAMESPACE}/mcp-cluster-worker-inference`, 3);
    api.deployments.set(`${NAMESPACE}/mcp-cluster-worker-diffusion`, 0);
    const provider = await kubernetesProvider(clusterConfig(['inference', 'diffusion']), {
      kubeconfig: kubeconfig('ok.yaml', api.url),
    });
    expect(provider.kind).toBe('kubernetes');
    expect(await provider.replicas('inference')).toBe(3);
    expect(await provider.replicas('diffusion')).toBe(0);
    const [get] = api.scaleRequests('mcp-cluster-worker-inference');
    expect(get?.method).toBe('GET');
    expect(get?.path).toBe(
      `/apis/apps/v1/namespaces/${NAMESPACE}/deployments/mcp-cluster-worker-inference/scale`,
    );
    expect(get?.authorization).toBe(`Bearer ${TOKEN}`);
    await provider.close();
  });

  it('patches spec.replicas with a merge patch, under its field manager', async () => {
    api.deployments.set(`${NAMESPACE}/mcp-cluster-worker-inference`, 2);
    const provider = await kubernetesProvider(clusterConfig(['inference']), {
      kubeconfig: kubeconfig('ok.yaml', api.url),
    });
    await provider.scale('inference', 5);
    const patches = api.scaleRequests('mcp-cluster-worker-inference', 'PATCH');
    expect(patches).toHaveLength(1);
    expect(patches[0]?.contentType).toBe('application/merge-patch+json');
    expect(JSON.parse(patches[0]?.body ?? '')).toEqual({ spec: { replicas: 5 } });
    expect(patches[0]?.query.get('fieldManager')).toBe('mcp-cluster-autoscaler');
    expect(api.deployments.get(`${NAMESPACE}/mcp-cluster-worker-inference`)).toBe(5);
    expect(await provider.replicas('inference')).toBe(5);

    // To zero, and back.
    await provider.scale('inference', 0);
    expect(await provider.replicas('inference')).toBe(0);
    await provider.scale('inference', 1);
    expect(api.deployments.get(`${NAMESPACE}/mcp-cluster-worker-inference`)).toBe(1);
    await provider.close();
  });

  it('sends no patch when the Deployment already has that many replicas', async () => {
    api.deployments.set(`${NAMESPACE}/mcp-cluster-worker-inference`, 4);
    const provider = await kubernetesProvider(clusterConfig(['inference']), {
      kubeconfig: kubeconfig('ok.yaml', api.url),
    });
    await provider.scale('inference', 4);
    expect(api.scaleRequests('mcp-cluster-worker-inference', 'GET')).toHaveLength(1);
    expect(api.scaleRequests('mcp-cluster-worker-inference', 'PATCH')).toHaveLength(0);
    await provider.close();
  });

  it("the client's default patch content type is refused: the merge-patch header is what makes it work", async () => {
    // The generated client picks application/json-patch+json for a patch unless told otherwise;
    // a real API server reads that as a list of operations and rejects an object body.
    const k8s = await import('@kubernetes/client-node');
    const kc = new k8s.KubeConfig();
    kc.loadFromFile(kubeconfig('ok.yaml', api.url));
    api.deployments.set(`${NAMESPACE}/mcp-cluster-worker-inference`, 1);
    const err = await kc
      .makeApiClient(k8s.AppsV1Api)
      .patchNamespacedDeploymentScale({
        name: 'mcp-cluster-worker-inference',
        namespace: NAMESPACE,
        body: { spec: { replicas: 3 } },
      })
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    expect(err).toBeInstanceOf(k8s.ApiException);
    expect((err as InstanceType<typeof k8s.ApiException>).code).toBe(415);
    expect(api.scaleRequests('mcp-cluster-worker-inference', 'PATCH')[0]?.contentType).toBe(
      'application/json-patch+json',
    );
    expect(api.deployments.get(`${NAMESPACE}/mcp-cluster-worker-inference`)).toBe(1);
  });

  it('reads the kubeconfig from KUBECONFIG when no file is given', async () => {
    const saved = { KUBECONFIG: process.env.KUBECONFIG, HOST: process.env.KUBERNETES_SERVICE_HOST };
    process.env.KUBECONFIG = kubeconfig('from-env.yaml', api.url);
    delete process.env.KUBERNETES_SERVICE_HOST;
    try {
      api.deployments.set(`${NAMESPACE}/mcp-cluster-worker-inference`, 2);
      const provider = await kubernetesProvider(clusterConfig(['inference']));
      expect(await provider.replicas('inference')).toBe(2);
      await provider.close();
    } finally {
      restore('KUBECONFIG', saved.KUBECONFIG);
      restore('KUBERNETES_SERVICE_HOST', saved.HOST);
    }
  });
});

describe('namespace and names', () => {
  it("uses the pod's namespace file when none is configured, and 'default' without one", async () => {
    const nsFile = join(dir, 'namespace');
    writeFileSync(nsFile, 'team-a\n');
    api.deployments.set('team-a/mcp-cluster-worker-inference', 6);
    api.deployments.set('default/mcp-cluster-worker-inference', 7);
    const config = clusterConfig(['inference'], {});
    const kc = kubeconfig('ok.yaml', api.url);
    const inPod = await kubernetesProvider(config, { kubeconfig: kc, namespaceFile: nsFile });
    expect(await inPod.replicas('inference')).toBe(6);
    const outside = await kubernetesProvider(config, { kubeconfig: kc, namespaceFile: join(dir, 'absent') });
    expect(await outside.replicas('inference')).toBe(7);
  });

  it('uses the configured deployment prefix', async () => {
    api.deployments.set(`${NAMESPACE}/gpu-embeddings`, 2);
    const provider = await kubernetesProvider(
      clusterConfig(['embeddings'], { namespace: NAMESPACE, deploymentPrefix: 'gpu-' }),
      { kubeconfig: kubeconfig('ok.yaml', api.url) },
    );
    expect(await provider.replicas('embeddings')).toBe(2);
  });

  it('refuses pool names that cannot be Deployment names, and a bad namespace, before any request', async () => {
    const kc = kubeconfig('ok.yaml', api.url);
    const underscore = await clusterError(
      kubernetesProvider(clusterConfig(['gpu_pool']), { kubeconfig: kc }),
    );
    expect(underscore.code).toBe('INVALID_CONFIG');
    expect(underscore.message).toContain('"mcp-cluster-worker-gpu_pool"');
    expect(underscore.message).toContain('autoscaler.kubernetes.deploymentPrefix');
    const badNs = await clusterError(
      kubernetesProvider(clusterConfig(['inference'], { namespace: 'Team A' }), { kubeconfig: kc }),
    );
    expect(badNs.code).toBe('INVALID_CONFIG');
    expect(badNs.message).toContain(
      'autoscaler.kubernetes.namespace: "Team A" is not a Kubernetes namespace name',
    );
    expect(api.requests).toHaveLength(0);
  });

  it('refuses unknown pools and replica counts that are not whole numbers >= 0, before any request', async () => {
    const provider = await kubernetesProvider(clusterConfig(['inference']), {
      kubeconfig: kubeconfig('ok.yaml', api.url),
    });
    expect((await clusterError(provider.replicas('nope'))).message).toBe(
      'no pool "nope" in the configuration',
    );
    expect((await clusterError(provider.scale('__proto__', 1))).code).toBe('INVALID_ARGUMENTS');
    for (const n of [-1, 1.5, Number.NaN, Number.POSITIVE_INFINITY]) {
      const err = await clusterError(provider.scale('inference', n));
      expect(err.code).toBe('INVALID_ARGUMENTS');
      expect(err.message).toContain('replicas must be a whole number >= 0');
    }
    expect(api.requests).toHaveLength(0);
  });
});

describe('failures', () => {
  it('404: names the Deployment and the setting to change', async () => {
    const provider = await kubernetesProvider(clusterConfig(['missing']), {
      kubeconfig: kubeconfig('ok.yaml', api.url),
    });
    for (const attempt of [() => provider.replicas('missing'), () => provider.scale('missing', 2)]) {
      const err = await clusterError(attempt());
      expect(err.code).toBe('INVALID_CONFIG');
      expect(err.message).toContain(
        `Deployment ${NAMESPACE}/mcp-cluster-worker-missing not found; create it or set autoscaler.kubernetes.deploymentPrefix`,
      );
    }
    // Not retried: a 404 does not go away by asking again.
    expect(api.scaleRequests('mcp-cluster-worker-missing')).toHaveLength(2);
  });

  it('403: says which permission is missing and where the RBAC is', async () => {
    const provider = await kubernetesProvider(
      clusterConfig(['pool'], { namespace: NAMESPACE, deploymentPrefix: 'forbidden-' }),
      { kubeconfig: kubeconfig('ok.yaml', api.url) },
    );
    const err = await clusterError(provider.replicas('pool'));
    expect(err.code).toBe('INVALID_CONFIG');
    expect(err.message).toContain(
      `the autoscaler's service account may not get deployments/scale in ${NAMESPACE}; apply deploy/kubernetes/base/autoscaler.yaml RBAC`,
    );
    // The API server's own words name the user, which tells which binding is missing.
    expect(err.message).toContain('system:serviceaccount:mcp-cluster:mcp-cluster-autoscaler');
    expect(api.scaleRequests('forbidden-pool')).toHaveLength(1);
  });

  it('401: says the credentials were rejected', async () => {
    const provider = await kubernetesProvider(clusterConfig(['inference']), {
      kubeconfig: kubeconfig('bad-token.yaml', api.url, 'expired'),
    });
    const err = await clusterError(provider.replicas('inference'));
    expect(err.code).toBe('INVALID_CONFIG');
    expect(err.message).toContain(
      `the Kubernetes API at ${api.url} rejected the autoscaler's credentials (401`,
    );
  });

  it('retries a 500 and succeeds on the next attempt', async () => {
    api.deployments.set(`${NAMESPACE}/flaky-inference`, 3);
    const provider = await kubernetesProvider(
      clusterConfig(['inference'], { namespace: NAMESPACE, deploymentPrefix: 'flaky-' }),
      { kubeconfig: kubeconfig('ok.yaml', api.url), ...fast },
    );
    expect(await provider.replicas('inference')).toBe(3);
    expect(api.scaleRequests('flaky-inference', 'GET')).toHaveLength(2);
  });

  it('gives up after the configured retries of a lasting 500, with the status and the API message', async () => {
    const provider = await kubernetesProvider(
      clusterConfig(['inference'], { namespace: NAMESPACE, deploymentPrefix: 'broken-' }),
      { kubeconfig: kubeconfig('ok.yaml', api.url), retries: 2, ...fast },
    );
    const err = await clusterError(provider.replicas('inference'));
    expect(err.code).toBe('BACKEND_UNAVAILABLE');
    expect(err.message).toContain(`the Kubernetes API at ${api.url} answered 500 to get of Deployment`);
    expect(err.message).toContain('after 3 attempts');
    expect(err.message).toContain('etcdserver: leader changed');
    expect(api.scaleRequests('broken-inference')).toHaveLength(3);
  });

  it('an unreachable API server: retried, then a message naming the address', async () => {
    // A port that was just free: nothing listens there.
    const probe = createTcpServer();
    await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
    const dead = `https://127.0.0.1:${(probe.address() as AddressInfo).port}`;
    await new Promise<void>((resolve) => probe.close(() => resolve()));
    const provider = await kubernetesProvider(clusterConfig(['inference']), {
      kubeconfig: kubeconfig('dead.yaml', dead),
      retries: 1,
      ...fast,
    });
    const err = await clusterError(provider.scale('inference', 2));
    expect(err.code).toBe('BACKEND_UNAVAILABLE');
    expect(err.message).toContain(
      `cannot reach the Kubernetes API at ${dead} (ECONNREFUSED) after 2 attempts`,
    );
  });

  it('a request that never gets an answer times out', async () => {
    const provider = await kubernetesProvider(
      clusterConfig(['inference'], { namespace: NAMESPACE, deploymentPrefix: 'slow-' }),
      { kubeconfig: kubeconfig('ok.yaml', api.url), requestTimeoutMs: 200, retries: 0 },
    );
    const err = await clusterError(provider.replicas('inference'));
    expect(err.code).toBe('BACKEND_UNAVAILABLE');
    expect(err.message).toContain(
      'did not answer get of Deployment mcp-cluster/slow-inference (pool inference) within 200 ms',
    );
  });

  it('a 200 that is not a Scale, or a Scale without a count, is a protocol error', async () => {
    const kc = kubeconfig('ok.yaml', api.url);
    const garbled = await kubernetesProvider(
      clusterConfig(['inference'], { namespace: NAMESPACE, deploymentPrefix: 'garbled-' }),
      { kubeconfig: kc },
    );
    const notJson = await clusterError(garbled.replicas('inference'));
    expect(notJson.code).toBe('BACKEND_PROTOCOL');
    expect(notJson.message).toContain('with something that is not a Scale object');
    const bogus = await kubernetesProvider(
      clusterConfig(['inference'], { namespace: NAMESPACE, deploymentPrefix: 'bogus-' }),
      { kubeconfig: kc },
    );
    const notCount = await clusterError(bogus.scale('inference', 1));
    expect(notCount.code).toBe('BACKEND_PROTOCOL');
    expect(notCount.message).toContain('whose spec.replicas is "lots", not a count');
    expect(api.scaleRequests('bogus-inference', 'PATCH')).toHaveLength(0);
  });

  it('after close, calls are refused without a request; close is idempotent', async () => {
    const provider = await kubernetesProvider(clusterConfig(['inference']), {
      kubeconfig: kubeconfig('ok.yaml', api.url),
    });
    await provider.close();
    await provider.close();
    const err = await clusterError(provider.replicas('inference'));
    expect(err.code).toBe('SHUTTING_DOWN');
    expect(api.requests).toHaveLength(0);
  });
});

describe('credentials', () => {
  it('no pod, no KUBECONFIG, no ~/.kube/config: says what is missing', async () => {
    const saved = {
      KUBECONFIG: process.env.KUBECONFIG,
      HOST: process.env.KUBERNETES_SERVICE_HOST,
      HOME: process.env.HOME,
    };
    const home = mkdtempSync(join(dir, 'home-'));
    delete process.env.KUBECONFIG;
    delete process.env.KUBERNETES_SERVICE_HOST;
    process.env.HOME = home;
    try {
      const err = await clusterError(kubernetesProvider(clusterConfig(['inference'])));
      expect(err.code).toBe('INVALID_CONFIG');
      expect(err.message).toContain(
        'no Kubernetes credentials: not running in a pod (KUBERNETES_SERVICE_HOST is unset)',
      );
      expect(err.message).toContain(join(home, '.kube', 'config'));
    } finally {
      restore('KUBECONFIG', saved.KUBECONFIG);
      restore('KUBERNETES_SERVICE_HOST', saved.HOST);
      restore('HOME', saved.HOME);
    }
  });

  it.each([
    ['not YAML', 'clusters: [unclosed\n'],
    ['a cluster without a server', 'apiVersion: v1\nkind: Config\nclusters:\n  - name: x\n    cluster: {}\n'],
    ['a scalar', '42\n'],
  ])('a kubeconfig that is %s: INVALID_CONFIG naming the file', async (_what, text) => {
    const path = join(dir, `bad-${Math.random().toString(36).slice(2)}.yaml`);
    writeFileSync(path, text);
    const err = await clusterError(kubernetesProvider(clusterConfig(['inference']), { kubeconfig: path }));
    expect(err.code).toBe('INVALID_CONFIG');
    expect(err.message).toContain(path);
  });

  it('a kubeconfig without a current context: says how to pick one', async () => {
    const path = join(dir, 'no-context.yaml');
    writeFileSync(
      path,
      `apiVersion: v1\nkind: Config\nclusters:\n  - name: x\n    cluster: { server: ${api.url} }\n`,
    );
    const err = await clusterError(kubernetesProvider(clusterConfig(['inference']), { kubeconfig: path }));
    expect(err.code).toBe('INVALID_CONFIG');
    expect(err.message).toContain('has no usable current context');
    expect(err.message).toContain('kubectl config use-context');
  });

  it('a certificate the kubeconfig does not trust: says to check its certificate authority', async () => {
    const provider = await kubernetesProvider(clusterConfig(['inference']), {
      kubeconfig: kubeconfig('no-ca.yaml', api.url, TOKEN, null),
    });
    const err = await clusterError(provider.replicas('inference'));
    expect(err.code).toBe('INVALID_CONFIG');
    expect(err.message).toContain(`the Kubernetes API at ${api.url} presented a certificate`);
    expect(err.message).toContain('certificate-authority');
  });

  it('a plain http:// server without insecure-skip-tls-verify: refused up front, with the fix', async () => {
    const path = kubeconfig('http.yaml', 'http://127.0.0.1:8080', TOKEN, null);
    const err = await clusterError(kubernetesProvider(clusterConfig(['inference']), { kubeconfig: path }));
    expect(err.code).toBe('INVALID_CONFIG');
    expect(err.message).toContain('is plain http://');
    expect(err.message).toContain('insecure-skip-tls-verify: true');
  });

  it('a kubeconfig that does not exist: INVALID_CONFIG naming the file', async () => {
    const path = join(dir, 'absent.yaml');
    const err = await clusterError(kubernetesProvider(clusterConfig(['inference']), { kubeconfig: path }));
    expect(err.code).toBe('INVALID_CONFIG');
    expect(err.message).toContain(`cannot load Kubernetes credentials from ${path}`);
  });
});

function restore(name: string, value: string | undefined): void {
  if (value === undefined) delete process.env[name];
  else process.env[name] = value;
}
