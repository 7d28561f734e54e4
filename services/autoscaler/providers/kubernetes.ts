/**
 * The `kubernetes` scaling provider: each pool is one Deployment, `<deploymentPrefix><pool>` in the
 * autoscaler's namespace, and a decision is a merge patch of `spec.replicas` on its `scale`
 * subresource (apps/v1), the same endpoint `kubectl scale` and the HorizontalPodAutoscaler use. It
 * needs `get` and `patch` on `deployments/scale` in that namespace (the Role in
 * deploy/kubernetes/base/autoscaler.yaml), nothing cluster-wide.
 *
 * Scale-down drains in Kubernetes itself: the ReplicaSet controller deletes pods, each gets SIGTERM and
 * its worker stops taking calls and finishes or hands back the ones it holds within `worker.drainGrace`,
 * which is why the worker Deployments keep `terminationGracePeriodSeconds` above it.
 *
 * `@kubernetes/client-node` is loaded when a provider is created, not when this module is imported:
 * it takes hundreds of milliseconds to load and only the `kubernetes` provider needs it.
 */
import { existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import type * as K8s from '@kubernetes/client-node';
import { ExponentialBackoff, handleWhen, retry, TimeoutStrategy, timeout, wrap } from 'cockatiel';
import { ClusterError, type Logger, type ResolvedConfig } from '../../core/index.js';
import type { ScalingProvider } from '../provider.js';

/** Where a pod's service account mount says which namespace the pod runs in. */
export const SERVICE_ACCOUNT_NAMESPACE_FILE = '/var/run/secrets/kubernetes.io/serviceaccount/namespace';

/** The field manager named on every patch, so `kubectl get -o yaml --show-managed-fields` shows who scaled. */
export const FIELD_MANAGER = 'mcp-cluster-autoscaler';

export interface KubernetesProviderOptions {
  /**
   * A kubeconfig file to use. Default: the pod's service account when `KUBERNETES_SERVICE_HOST` is set,
   * else `KUBECONFIG`, else `~/.kube/config` (its current context).
   */
  kubeconfig?: string;
  /**
   * File holding the pod's own namespace, read when `autoscaler.kubernetes.namespace` is empty; when it
   * does not exist the namespace is `default`. Default {@link SERVICE_ACCOUNT_NAMESPACE_FILE}.
   */
  namespaceFile?: string;
  /** Time one API request may take before it is abandoned (and retried), in ms. Default 10 000. */
  requestTimeoutMs?: number;
  /**
   * Retries of a transient failure: a 5xx or 429 answer, a reset, refused or timed-out connection.
   * A patch of `spec.replicas` is idempotent, so retrying one that may have landed is harmless. Default 2.
   */
  retries?: number;
  /** Delay before the first retry, in ms; exponential with jitter after it, at most 8 times this. Default 250. */
  retryDelayMs?: number;
  /** Where retries are logged (warn). Default: not logged. */
  log?: Logger;
}

/** A DNS-1123 subdomain: what Kubernetes accepts as a Deployment name. */
const DEPLOYMENT_NAME = /^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
/** A DNS-1123 label: what Kubernetes accepts as a namespace. */
const NAMESPACE_NAME = /^(?=.{1,63}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

/**
 * Connection failures worth another try: the API server restarting, a load balancer dropping idle
 * sockets. The `UND_ERR_` codes are undici's (the client's fetch) for a socket closed under a request
 * and a connect that timed out.
 */
const TRANSIENT_NETWORK_CODES = new Set([
  'ECONNRESET',
  'ECONNREFUSED',
  'ECONNABORTED',
  'ETIMEDOUT',
  'EPIPE',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'UND_ERR_SOCKET',
  'UND_ERR_CONNECT_TIMEOUT',
]);

/** Node's codes for a server certificate the kubeconfig's certificate authority does not vouch for. */
const TLS_CODE = /^(CERT_|UNABLE_TO_|DEPTH_ZERO_|SELF_SIGNED_|ERR_TLS_)/;

/**
 * A provider that scales the pools of `config` through the Kubernetes API.
 *
 * @throws ClusterError `INVALID_CONFIG` when no credentials are found (not in a pod, no `KUBECONFIG`, no
 *   `~/.kube/config`), the kubeconfig cannot be read or has no current context, or a pool's Deployment
 *   name or the namespace is not a valid Kubernetes name. Nothing is requested from the API here: an
 *   unreachable API server surfaces on the first `replicas` or `scale`.
 */
export async function kubernetesProvider(
  config: ResolvedConfig,
  options: KubernetesProviderOptions = {},
): Promise<ScalingProvider> {
  const { deploymentPrefix } = config.autoscaler.kubernetes;
  const invalid = Object.keys(config.pools)
    .map((pool) => `${deploymentPrefix}${pool}`)
    .filter((name) => !DEPLOYMENT_NAME.test(name));
  if (invalid.length > 0) {
    throw new ClusterError(
      'INVALID_CONFIG',
      `autoscaler.kubernetes.deploymentPrefix: Deployment names ${invalid.map((n) => `"${n}"`).join(', ')} ` +
        'are not valid Kubernetes names (lowercase letters, digits, "-" and ".", at most 253); ' +
        'change the prefix or rename the pool (no "_")',
    );
  }
  const namespace = resolveNamespace(
    config.autoscaler.kubernetes.namespace,
    options.namespaceFile ?? SERVICE_ACCOUNT_NAMESPACE_FILE,
  );

  const k8s = await import('@kubernetes/client-node');
  const { kubeConfig, source } = loadKubeConfig(k8s, options.kubeconfig);
  const cluster = kubeConfig.getCurrentCluster();
  if (!cluster) {
    throw new ClusterError(
      'INVALID_CONFIG',
      `${source} has no usable current context (current-context "${kubeConfig.getCurrentContext() ?? ''}"); ` +
        'set one with `kubectl config use-context <name>`',
    );
  }
  if (cluster.server.startsWith('http:') && !cluster.proxyUrl && !cluster.skipTLSVerify) {
    // The client refuses plain HTTP at the first request; say so now, with the fix.
    throw new ClusterError(
      'INVALID_CONFIG',
      `${source}: the current cluster's server ${cluster.server} is plain http://, which the Kubernetes client ` +
        'refuses unless the cluster sets insecure-skip-tls-verify: true; use the https:// address of the API server',
    );
  }
  let api: K8s.AppsV1Api;
  try {
    api = kubeConfig.makeApiClient(k8s.AppsV1Api);
  } catch (err) {
    throw new ClusterError('INVALID_CONFIG', `${source}: ${(err as Error).message}`, { cause: err });
  }
  return new KubernetesScaler(k8s, api, config, namespace, cluster.server, options);
}

class KubernetesScaler implements ScalingProvider {
  readonly kind = 'kubernetes' as const;
  private readonly closing = new AbortController();
  private readonly requestTimeoutMs: number;
  private readonly retries: number;
  private readonly retryDelayMs: number;

  constructor(
    private readonly k8s: typeof K8s,
    private readonly api: K8s.AppsV1Api,
    private readonly config: ResolvedConfig,
    private readonly namespace: string,
    private readonly server: string,
    private readonly options: KubernetesProviderOptions,
  ) {
    this.requestTimeoutMs = options.requestTimeoutMs ?? 10_000;
    this.retries = options.retries ?? 2;
    this.retryDelayMs = options.retryDelayMs ?? 250;
  }

  async replicas(pool: string): Promise<number> {
    const name = this.deployment(pool);
    const scale = await this.request('get', pool, name, (opts) =>
      this.api.readNamespacedDeploymentScale({ name, namespace: this.namespace }, opts),
    );
    return this.specReplicas(scale, name);
  }

  async scale(pool: string, replicas: number): Promise<void> {
    const name = this.deployment(pool);
    if (!Number.isSafeInteger(replicas) || replicas < 0) {
      throw new ClusterError(
        'INVALID_ARGUMENTS',
        `cannot scale Deployment ${this.namespace}/${name} to ${replicas}: replicas must be a whole number >= 0`,
      );
    }
    // Read first: a patch per pool every interval would be a write request (admission, an audit log
    // entry, a managedFields update) even when nothing changes; a read is cheap.
    if ((await this.replicas(pool)) === replicas) return;
    await this.request('patch', pool, name, (opts) =>
      this.api.patchNamespacedDeploymentScale(
        { name, namespace: this.namespace, body: { spec: { replicas } }, fieldManager: FIELD_MANAGER },
        // The generated client would send the first type of the operation's list,
        // application/json-patch+json, which expects a list of operations and rejects this body.
        this.k8s.setHeaderOptions('Content-Type', this.k8s.PatchStrategy.MergePatch, opts),
      ),
    );
  }

  async close(): Promise<void> {
    this.closing.abort();
  }

  private deployment(pool: string): string {
    if (!Object.hasOwn(this.config.pools, pool)) {
      throw new ClusterError('INVALID_ARGUMENTS', `no pool "${pool}" in the configuration`);
    }
    return `${this.config.autoscaler.kubernetes.deploymentPrefix}${pool}`;
  }

  /** `spec.replicas` of a Scale; Kubernetes omits the field when it is 0. */
  private specReplicas(scale: K8s.V1Scale, name: string): number {
    // The client hands over whatever a 2xx body parsed to (an HTML page from a proxy becomes an empty
    // object), and an empty spec means 0: without this check such an answer would read as "scaled to zero".
    if ((scale as { kind?: unknown } | null)?.kind !== 'Scale') {
      throw new ClusterError(
        'BACKEND_PROTOCOL',
        `the Kubernetes API at ${this.server} answered get of Deployment ${this.namespace}/${name} with ` +
          `something that is not a Scale object; is ${this.server} the API server?`,
      );
    }
    const spec: unknown = (scale as { spec?: unknown }).spec;
    const replicas: unknown = (spec as { replicas?: unknown } | null | undefined)?.replicas ?? 0;
    if (typeof replicas !== 'number' || !Number.isSafeInteger(replicas) || replicas < 0) {
      throw new ClusterError(
        'BACKEND_PROTOCOL',
        `the Kubernetes API at ${this.server} answered a Scale of Deployment ${this.namespace}/${name} ` +
          `whose spec.replicas is ${printable(JSON.stringify(replicas) ?? String(replicas))}, not a count`,
      );
    }
    return replicas;
  }

  /**
   * Runs one API request with a per-attempt timeout and retries of transient failures, and turns what
   * fails into a ClusterError that says what to do.
   */
  private async request<T>(
    verb: 'get' | 'patch',
    pool: string,
    name: string,
    send: (opts: K8s.ConfigurationOptions) => Promise<T>,
  ): Promise<T> {
    if (this.closing.signal.aborted) {
      throw new ClusterError('SHUTTING_DOWN', 'the kubernetes scaling provider is closed');
    }
    let attempts = 0;
    const retryPolicy = retry(
      handleWhen((err) => this.isTransient(err)),
      {
        maxAttempts: this.retries,
        backoff: new ExponentialBackoff({
          initialDelay: this.retryDelayMs,
          maxDelay: this.retryDelayMs * 8,
        }),
      },
    );
    retryPolicy.onRetry((event) => {
      const error = 'error' in event ? event.error : undefined;
      this.options.log?.warn('kubernetes API request failed; retrying', {
        pool,
        deployment: `${this.namespace}/${name}`,
        verb,
        attempt: event.attempt,
        delayMs: Math.round(event.delay),
        error: error ? this.describe(error) : 'unknown',
      });
    });
    const policy = wrap(retryPolicy, timeout(this.requestTimeoutMs, TimeoutStrategy.Cooperative));
    const last = { status: 0 };
    try {
      return await policy.execute(({ signal }) => {
        attempts++;
        last.status = 0;
        return send(this.attemptOptions(signal, last));
      }, this.closing.signal);
    } catch (err) {
      throw this.explain(err, verb, pool, name, attempts, last.status);
    }
  }

  /**
   * Request options of one attempt: abort the HTTP request with `signal` (timeout or close), and note
   * the answer's status, so a 2xx whose body the client cannot parse is told apart from a failed request.
   */
  private attemptOptions(signal: AbortSignal, last: { status: number }): K8s.ConfigurationOptions {
    const { Observable } = this.k8s;
    return {
      middleware: [
        {
          pre: (request) => {
            request.setSignal(signal);
            return new Observable(Promise.resolve(request));
          },
          post: (response) => {
            last.status = response.httpStatusCode;
            return new Observable(Promise.resolve(response));
          },
        },
      ],
      middlewareMergeStrategy: 'append',
    };
  }

  private isTransient(err: unknown): boolean {
    if (this.closing.signal.aborted) return false;
    if (err instanceof this.k8s.ApiException) return err.code >= 500 || err.code === 429;
    if (isAbort(err)) return true; // our per-attempt timeout
    return TRANSIENT_NETWORK_CODES.has(networkCode(err) ?? '');
  }

  /** One line for a log: status and the API server's message, or the network error. */
  private describe(err: unknown): string {
    if (err instanceof this.k8s.ApiException) return `${err.code} ${apiMessage(err.body)}`;
    return err instanceof Error ? err.message : String(err);
  }

  private explain(
    err: unknown,
    verb: 'get' | 'patch',
    pool: string,
    name: string,
    attempts: number,
    status: number,
  ): ClusterError {
    const where = `Deployment ${this.namespace}/${name} (pool ${pool})`;
    const tries = attempts > 1 ? ` after ${attempts} attempts` : '';
    if (this.closing.signal.aborted) {
      return new ClusterError(
        'SHUTTING_DOWN',
        `the kubernetes scaling provider closed during ${verb} of ${where}`,
        {
          cause: err,
        },
      );
    }
    if (err instanceof this.k8s.ApiException) {
      const said = apiMessage(err.body);
      const detail = said ? ` (the API server said: ${said})` : '';
      switch (err.code) {
        case 404:
          return new ClusterError(
            'INVALID_CONFIG',
            `Deployment ${this.namespace}/${name} not found; create it or set autoscaler.kubernetes.deploymentPrefix ` +
              `(and autoscaler.kubernetes.namespace) to where the workers of pool ${pool} run`,
            { cause: err },
          );
        case 403:
          return new ClusterError(
            'INVALID_CONFIG',
            `the autoscaler's service account may not ${verb} deployments/scale in ${this.namespace}; ` +
              `apply deploy/kubernetes/base/autoscaler.yaml RBAC (Role and RoleBinding in that namespace)${detail}`,
            { cause: err },
          );
        case 401:
          return new ClusterError(
            'INVALID_CONFIG',
            `the Kubernetes API at ${this.server} rejected the autoscaler's credentials (401 Unauthorized); ` +
              'check the kubeconfig user or the pod service account token',
            { cause: err },
          );
        default:
          if (err.code >= 500 || err.code === 429) {
            return new ClusterError(
              'BACKEND_UNAVAILABLE',
              `the Kubernetes API at ${this.server} answered ${err.code} to ${verb} of ${where}${tries}${detail}`,
              { cause: err },
            );
          }
          return new ClusterError(
            'INTERNAL',
            `the Kubernetes API at ${this.server} refused ${verb} of ${where} with ${err.code}${detail}`,
            { cause: err },
          );
      }
    }
    if (isAbort(err)) {
      return new ClusterError(
        'BACKEND_UNAVAILABLE',
        `the Kubernetes API at ${this.server} did not answer ${verb} of ${where} within ${this.requestTimeoutMs} ms${tries}`,
        { cause: err },
      );
    }
    const code = networkCode(err);
    if (code !== undefined) {
      if (TLS_CODE.test(code)) {
        return new ClusterError(
          'INVALID_CONFIG',
          `the Kubernetes API at ${this.server} presented a certificate the kubeconfig's certificate authority ` +
            `does not vouch for (${code}); check certificate-authority(-data) of the current cluster`,
          { cause: err },
        );
      }
      return new ClusterError(
        'BACKEND_UNAVAILABLE',
        `cannot reach the Kubernetes API at ${this.server} (${code})${tries}; check that it runs ` +
          'and is reachable from here (in a pod: network policies; elsewhere: the current context of KUBECONFIG ' +
          'or ~/.kube/config)',
        { cause: err },
      );
    }
    if (status >= 200 && status < 300) {
      // A 2xx whose body is not a JSON Scale: a proxy or something else answering on that address.
      return new ClusterError(
        'BACKEND_PROTOCOL',
        `the Kubernetes API at ${this.server} answered ${verb} of ${where} with something that is not a Scale ` +
          `object (${printable(err instanceof Error ? err.message : String(err))}); is ${this.server} the API server?`,
        { cause: err },
      );
    }
    if (err instanceof ClusterError) return err;
    return new ClusterError(
      'BACKEND_UNAVAILABLE',
      `${verb} of ${where} through the Kubernetes API at ${this.server} failed: ${printable(
        err instanceof Error ? err.message : String(err),
      )}`,
      { cause: err },
    );
  }
}

/**
 * The namespace of the worker Deployments: the configured one, else the pod's own (service account
 * mount), else `default`.
 */
function resolveNamespace(configured: string, namespaceFile: string): string {
  let namespace = configured.trim();
  let origin = 'autoscaler.kubernetes.namespace';
  if (namespace === '') {
    origin = namespaceFile;
    try {
      namespace = existsSync(namespaceFile) ? readFileSync(namespaceFile, 'utf8').trim() : 'default';
    } catch (err) {
      throw new ClusterError(
        'INVALID_CONFIG',
        `cannot read the pod's namespace from ${namespaceFile} (${(err as Error).message}); ` +
          'set autoscaler.kubernetes.namespace',
        { cause: err },
      );
    }
  }
  if (!NAMESPACE_NAME.test(namespace)) {
    throw new ClusterError(
      'INVALID_CONFIG',
      `${origin}: "${printable(namespace)}" is not a Kubernetes namespace name (lowercase letters, digits and "-", at most 63)`,
    );
  }
  return namespace;
}

/**
 * The credentials: an explicit file, the pod's service account, `KUBECONFIG` or `~/.kube/config`. The
 * client's own `loadFromDefault` falls back to http://localhost:8080 when it finds none, which would
 * turn a missing kubeconfig into "connection refused" later; this says what is missing instead.
 */
function loadKubeConfig(
  k8s: typeof K8s,
  file: string | undefined,
): { kubeConfig: K8s.KubeConfig; source: string } {
  const kubeConfig = new k8s.KubeConfig();
  const home = join(homedir(), '.kube', 'config');
  let source: string;
  try {
    if (file) {
      source = `kubeconfig ${file}`;
      kubeConfig.loadFromFile(file);
    } else if (process.env.KUBERNETES_SERVICE_HOST) {
      source = 'the in-cluster service account';
      kubeConfig.loadFromCluster();
    } else if (process.env.KUBECONFIG) {
      source = `KUBECONFIG (${process.env.KUBECONFIG})`;
      kubeConfig.loadFromDefault();
    } else if (existsSync(home)) {
      source = `kubeconfig ${home}`;
      kubeConfig.loadFromDefault();
    } else {
      throw new ClusterError(
        'INVALID_CONFIG',
        'no Kubernetes credentials: not running in a pod (KUBERNETES_SERVICE_HOST is unset), KUBECONFIG is ' +
          `unset and ${home} does not exist; run the autoscaler in the cluster with its service account ` +
          '(deploy/kubernetes/base/autoscaler.yaml), point KUBECONFIG at a kubeconfig, or pick another ' +
          'autoscaler.provider (local, metrics)',
      );
    }
  } catch (err) {
    if (err instanceof ClusterError) throw err;
    throw new ClusterError(
      'INVALID_CONFIG',
      `cannot load Kubernetes credentials from ${file ?? process.env.KUBECONFIG ?? home}: ${printable((err as Error).message)}`,
      { cause: err },
    );
  }
  return { kubeConfig, source };
}

/**
 * Whether a request was aborted: the per-attempt timeout fired (or the provider closed). The client's
 * fetch (undici) rejects with the signal's reason, a DOMException named AbortError.
 */
function isAbort(err: unknown): boolean {
  return err instanceof Error && err.name === 'AbortError';
}

/**
 * The code of the network or TLS failure behind a request, when that is why it failed. The client's
 * fetch (undici) rejects with `TypeError('fetch failed')` whose `cause` is the socket's error
 * (ECONNREFUSED, a certificate verification code, UND_ERR_SOCKET…), an AggregateError when every
 * address of the server's name failed.
 */
function networkCode(err: unknown): string | undefined {
  if (!(err instanceof TypeError)) return undefined;
  let cause: unknown = err.cause;
  for (let depth = 0; depth < 4 && cause instanceof Error; depth++) {
    const code: unknown = (cause as { code?: unknown }).code;
    if (typeof code === 'string' && code !== '') return code;
    cause = cause instanceof AggregateError ? cause.errors[0] : cause.cause;
  }
  return undefined;
}

/** The `message` of a Kubernetes `Status` body (the client hands it over as text), bounded. */
function apiMessage(body: unknown): string {
  let value = body;
  if (typeof body === 'string') {
    try {
      value = JSON.parse(body);
    } catch {
      return printable(body);
    }
  }
  if (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as { message?: unknown }).message === 'string'
  ) {
    return printable((value as { message: string }).message);
  }
  return '';
}

/** Text from a remote party, made safe for one log or error line: no control characters, at most 300 chars. */
function printable(text: string): string {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: stripping them is the point.
  const clean = text.replace(/[\u0000-\u001f\u007f]+/g, ' ').trim();
  return clean.length > 300 ? `${clean.slice(0, 300)}…` : clean;
}
