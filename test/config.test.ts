import { describe, expect, it } from 'vitest';
import { backendsVariable, ClusterError, parseDurationMs, parseSizeBytes } from '../services/core/index.js';
import { resolveConfig } from './support/families.js';

/** Runs `fn`, expecting a ClusterError INVALID_CONFIG, and returns its message. */
function configError(fn: () => unknown): string {
  let thrown: unknown;
  try {
    fn();
  } catch (err) {
    thrown = err;
  }
  expect(thrown, 'expected resolveConfig to throw').toBeInstanceOf(ClusterError);
  expect((thrown as ClusterError).code).toBe('INVALID_CONFIG');
  return (thrown as ClusterError).message;
}

const yaml = (lines: string[]) => `${lines.join('\n')}\n`;

describe('parseDurationMs', () => {
  it.each([
    ['250ms', 250],
    ['30s', 30_000],
    ['2m', 120_000],
    ['1h', 3_600_000],
    ['1.5s', 1500],
    ['0s', 0],
    [' 30s ', 30_000],
    ['30 s', 30_000],
    ['0.5h', 1_800_000],
  ])('parses %j as %d ms', (text, ms) => {
    expect(parseDurationMs(text)).toBe(ms);
  });

  it('takes plain non-negative numbers as milliseconds', () => {
    expect(parseDurationMs(0)).toBe(0);
    expect(parseDurationMs(1234)).toBe(1234);
    expect(parseDurationMs(1.5)).toBe(1.5);
  });

  it.each([
    '',
    ' ',
    's',
    '30',
    '30sec',
    '1d',
    '-1s',
    '+1s',
    '1e3s',
    '1.s',
    '.5s',
    'ms30',
    '30 m s',
    '30s30s',
    'NaN',
  ])('rejects malformed %j', (text) => {
    expect(parseDurationMs(text)).toBeUndefined();
  });

  it.each([-1, Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY])(
    'rejects the number %d',
    (n) => {
      expect(parseDurationMs(n)).toBeUndefined();
    },
  );
});

describe('parseSizeBytes', () => {
  it.each([
    ['512b', 512],
    ['64kb', 65_536],
    ['1mb', 1_048_576],
    ['1gb', 1_073_741_824],
    ['1MB', 1_048_576],
    ['1MiB', 1_048_576],
    ['2kib', 2048],
    ['1gib', 1_073_741_824],
    ['1.5kb', 1536],
    [' 1 mb ', 1_048_576],
  ])('parses %j as %d bytes', (text, bytes) => {
    expect(parseSizeBytes(text)).toBe(bytes);
  });

  it('takes plain non-negative integers as bytes', () => {
    expect(parseSizeBytes(0)).toBe(0);
    expect(parseSizeBytes(2048)).toBe(2048);
  });

  it.each(['', 'mb', '1', '1tb', '1k', '-1mb', '1 m b', 'one mb', '1mb1', '1e3kb'])(
    'rejects malformed %j',
    (text) => {
      expect(parseSizeBytes(text)).toBeUndefined();
    },
  );

  it.each([-1, 1.5, Number.NaN, Number.POSITIVE_INFINITY])('rejects the number %d', (n) => {
    expect(parseSizeBytes(n)).toBeUndefined();
  });
});

describe('resolveConfig defaults', () => {
  it('resolves an empty source to the documented defaults', () => {
    const c = resolveConfig('');
    expect(c.namespace).toBe('mcp');
    expect(c.brokerUrl).toBe('memory:');
    expect(c.ingress).toEqual({
      host: '127.0.0.1',
      port: 3000,
      deliveryHost: '127.0.0.1',
      deliveryPort: 0,
      deliveryAdvertise: '',
      allowedHosts: ['localhost', '127.0.0.1', '[::1]'],
      allowedOrigins: ['http://localhost', 'http://127.0.0.1'],
      maxBodyBytes: 1_048_576,
      maxJsonDepth: 64,
      headersTimeoutMs: 10_000,
      requestTimeoutMs: 30_000,
      sessionSecret: '',
      maxDeadlineMs: 600_000,
      drainGraceMs: 30_000,
      statusPage: { enabled: true, scope: 'mcp-cluster:admin', refreshIntervalMs: 2_000 },
      resultLinks: { minSizeBytes: 0, ttlMs: 3_600_000 },
    });
    expect(c.worker).toEqual({
      host: '127.0.0.1',
      port: 0,
      ackWaitMs: 30_000,
      maxDeliveries: 5,
      batchInFlight: 4,
      // Under a spot node's 30 s preemption notice, with room for a 5 s preStop.
      drainGraceMs: 20_000,
      deliveryConnectTimeoutMs: 5000,
      deliveryAckTimeoutMs: 10_000,
    });
  });

  it('has three pools, inference (openai-chat), embeddings (openai-embeddings) and diffusion (comfyui), without endpoints', () => {
    const { pools } = resolveConfig('');
    expect(Object.keys(pools).sort()).toEqual(['diffusion', 'embeddings', 'inference']);
    expect(pools.diffusion).toMatchObject({ backend: 'comfyui', endpoints: [] });
    expect(pools.inference).toEqual({
      name: 'inference',
      backend: 'openai-chat',
      endpoints: [],
      maxInFlight: undefined,
      healthIntervalMs: 5000,
      backendTimeoutMs: 30_000,
      scaling: {
        minReplicas: 0,
        maxReplicas: 10,
        targetQueueWaitMs: 1000,
        batchDrainTargetMs: 3_600_000,
        scaleDownStabilizationMs: 300_000,
        idleToZeroMs: 600_000,
        maxScaleUpFactor: 2,
        maxScaleUpStep: 4,
        replicaConcurrency: 16,
      },
      scopes: [],
      gpu: undefined,
      // The backend kind's default size applies (see the ingress's admission layer).
      fairQueue: { size: undefined },
      healthPath: '/health',
    });
    expect(pools.diffusion?.scaling.replicaConcurrency).toBe(1);
    // ComfyUI has no /health; the diffusion family names what it probes instead.
    expect(pools.diffusion?.healthPath).toBe('/system_stats');
    expect(pools.embeddings).toMatchObject({
      name: 'embeddings',
      backend: 'openai-embeddings',
      endpoints: [],
    });
  });

  it('has the tools of the three families, with deadlines in ms and default limits', () => {
    const { tools } = resolveConfig('');
    expect(tools.map((t) => [t.name, t.template, t.pool, t.model, t.deadlineMs])).toEqual([
      ['generate_text', 'generate_text', 'inference', 'sim-llm', 120_000],
      ['chat', 'chat', 'inference', 'sim-llm', 120_000],
      ['summarize', 'summarize', 'inference', 'sim-llm', 120_000],
      ['embed', 'embed', 'embeddings', 'sim-embed', 60_000],
      ['generate_image', 'generate_image', 'diffusion', 'sim-diffusion', 300_000],
    ]);
    expect(tools[3]).toMatchObject({
      maxTexts: 256,
      maxTextLength: 100_000,
      batch: { maxSize: 32, maxTokens: 16_384, maxWaitMs: 5 },
      cache: { enabled: true, ttlMs: 3_600_000, maxEntries: 100_000 },
    });
    // Without a configured schema, a tool has its template's, with the tool's limits in it.
    expect(tools[3]?.inputSchema).toMatchObject({
      type: 'object',
      required: ['texts'],
      properties: { texts: { maxItems: 256, items: { maxLength: 100_000 } } },
    });
    expect(tools[3]?.outputSchema).toMatchObject({
      type: 'object',
      required: ['model', 'dimensions', 'vectors'],
    });
    expect(tools[0]?.outputSchema).toBeUndefined();
    expect(tools[4]).toMatchObject({ maxImageSize: 1024, maxSteps: 50, workflow: undefined });
  });

  it('offers only the default tools whose pool a file declares when it lists no tools', () => {
    const c = resolveConfig(yaml(['pools:', '  embeddings:', '    backend: tei']));
    expect(c.tools.map((t) => t.name)).toEqual(['embed']);
  });

  it('treats whitespace, comments and an empty document as all defaults', () => {
    const defaults = resolveConfig('');
    expect(resolveConfig('   \n\t\n')).toEqual(defaults);
    expect(resolveConfig('# nothing here\n')).toEqual(defaults);
    expect(resolveConfig('---\n')).toEqual(defaults);
    expect(resolveConfig('~\n')).toEqual(defaults);
  });

  it('hands out independent objects on each call', () => {
    const first = resolveConfig('');
    first.pools.inference?.endpoints.push({ url: 'http://leak:1', maxConcurrency: 1 });
    first.ingress.allowedHosts.push('leak');
    first.tools.pop();
    const second = resolveConfig('');
    expect(second.pools.inference?.endpoints).toEqual([]);
    expect(second.ingress.allowedHosts).not.toContain('leak');
    expect(second.tools).toHaveLength(5);
  });
});

describe('resolveConfig of a file', () => {
  it('converts durations and sizes in several forms', () => {
    const c = resolveConfig(
      yaml([
        'ingress:',
        '  maxBodySize: 512kb',
        '  maxDeadline: 2m',
        '  drainGrace: 1500',
        'worker:',
        '  ackWait: 1.5s',
        '  deliveryConnectTimeout: 250ms',
        '  deliveryAckTimeout: 1h',
        'pools:',
        '  inference:',
        '    backend: openai-chat',
        '    healthInterval: 10s',
        '    backendTimeout: 45000',
        '  embeddings:',
        '    backend: openai-embeddings',
      ]),
    );
    expect(c.ingress.maxBodyBytes).toBe(524_288);
    expect(c.ingress.maxDeadlineMs).toBe(120_000);
    expect(c.ingress.drainGraceMs).toBe(1500);
    expect(c.worker.ackWaitMs).toBe(1500);
    expect(c.worker.deliveryConnectTimeoutMs).toBe(250);
    expect(c.worker.deliveryAckTimeoutMs).toBe(3_600_000);
    expect(c.pools.inference?.healthIntervalMs).toBe(10_000);
    expect(c.pools.inference?.backendTimeoutMs).toBe(45_000);
    expect(c.pools.embeddings?.healthIntervalMs).toBe(5000);
  });

  it('takes pools with endpoints and tools with their own limits', () => {
    const c = resolveConfig(
      yaml([
        'pools:',
        '  gpu:',
        '    backend: openai-chat',
        '    maxInFlight: 40',
        '    endpoints:',
        '      - url: http://10.0.0.1:8000',
        '        maxConcurrency: 32',
        '      - url: https://gpu-2.example.com',
        'tools:',
        '  - name: chat.v2',
        '    template: generate_text',
        '    description: Chat with the big model',
        '    pool: gpu',
        '    model: llama',
        '    deadline: 90s',
        '    maxTokens: 100',
      ]),
    );
    expect(Object.keys(c.pools)).toEqual(['gpu']);
    expect(c.pools.gpu).toEqual({
      name: 'gpu',
      backend: 'openai-chat',
      endpoints: [
        { url: 'http://10.0.0.1:8000', maxConcurrency: 32 },
        { url: 'https://gpu-2.example.com', maxConcurrency: 16 },
      ],
      maxInFlight: 40,
      healthIntervalMs: 5000,
      backendTimeoutMs: 30_000,
      scaling: expect.objectContaining({ minReplicas: 0, maxReplicas: 10 }),
      scopes: [],
      gpu: undefined,
      fairQueue: { size: undefined },
      healthPath: '/health',
    });
    expect(c.tools).toHaveLength(1);
    expect(c.tools[0]).toMatchObject({
      name: 'chat.v2',
      template: 'generate_text',
      description: 'Chat with the big model',
      pool: 'gpu',
      model: 'llama',
      deadlineMs: 90_000,
      maxTokens: 100,
      maxTextLength: 100_000,
    });
    // A tool has the settings of its template's family only.
    expect(c.tools[0]).not.toHaveProperty('maxTexts');
  });

  it('accepts every documented broker scheme', () => {
    for (const url of [
      'memory:',
      'nats://nats:4222',
      'tls://nats:4222',
      'redis://redis:6379',
      'rediss://r:6380',
    ]) {
      expect(resolveConfig(yaml(['broker:', `  url: "${url}"`])).brokerUrl).toBe(url);
    }
  });
});

describe('resolveConfig rejections', () => {
  it('reports a YAML syntax error with the origin', () => {
    const message = configError(() => resolveConfig('ingress:\n  port: [1, 2\n', {}, 'cluster.yaml'));
    expect(message).toContain('cluster.yaml');
    expect(message).toContain('not valid YAML');
  });

  it('names the default origin "config" when none is given', () => {
    expect(configError(() => resolveConfig('a: [\n'))).toMatch(/^config: /);
  });

  it('rejects duplicate YAML keys and multiple documents', () => {
    configError(() => resolveConfig('ingress: {}\ningress: {}\n'));
    configError(() => resolveConfig('ingress: {}\n---\nworker: {}\n'));
  });

  it('rejects an unknown key, naming its path', () => {
    const nested = configError(() => resolveConfig(yaml(['ingress:', '  prot: 8080'])));
    expect(nested).toMatch(/ingress: .*"prot"/);
    const top = configError(() => resolveConfig(yaml(['ingres:', '  port: 8080'])));
    expect(top).toMatch(/\(top level\): .*"ingres"/);
    const inTool = configError(() =>
      resolveConfig(
        yaml([
          'tools:',
          '  - name: t',
          '    template: embed',
          '    pool: embeddings',
          '    model: m',
          '    colour: red',
        ]),
      ),
    );
    expect(inTool).toMatch(/tools\.0: .*"colour"/);
    expect(inTool).toContain('a tool of template embed takes name, template, description, pool, model');
    expect(inTool).toContain('the settings of family embeddings: maxTexts, maxTextLength, batch, cache');
    const inBatch = configError(() =>
      resolveConfig(
        yaml([
          'tools:',
          '  - { name: t, template: embed, pool: embeddings, model: m, batch: { maxSzie: 8 } }',
        ]),
      ),
    );
    expect(inBatch).toMatch(/tools\.0\.batch: .*"maxSzie"/);
  });

  it("rejects a setting of another family's template, naming that family", () => {
    const message = configError(() =>
      resolveConfig(
        yaml(['tools:', '  - { name: t, template: generate_text, pool: inference, model: m, maxTexts: 8 }']),
      ),
    );
    expect(message).toMatch(
      /tools\.0: Unrecognized key: "maxTexts" \(a setting of family embeddings \(template embed\)\); a tool of template generate_text takes .*family inference: maxTokens, maxTextLength/,
    );
  });

  it('names the path and the value found for a wrong value', () => {
    const message = configError(() => resolveConfig(yaml(['ingress:', '  port: "abc"']), {}, 'my.yaml'));
    expect(message).toContain('my.yaml');
    expect(message).toMatch(/ingress\.port: .*\(found "abc"\)/);
  });

  it.each([
    [['ingress:', '  port: 70000'], 'ingress.port', '70000'],
    [['ingress:', '  port: -1'], 'ingress.port', '-1'],
    [['ingress:', '  port: 80.5'], 'ingress.port', '80.5'],
    [['worker:', '  maxDeliveries: 0'], 'worker.maxDeliveries', '0'],
    [['worker:', '  ackWait: soon'], 'worker.ackWait', '"soon"'],
    [['ingress:', '  maxBodySize: lots'], 'ingress.maxBodySize', '"lots"'],
    [['ingress:', '  maxBodySize: 1tb'], 'ingress.maxBodySize', '"1tb"'],
    [['cluster:', '  namespace: Has Spaces'], 'cluster.namespace', '"Has Spaces"'],
    [['ingress:', '  allowedHosts: localhost'], 'ingress.allowedHosts', '"localhost"'],
    [
      ['pools:', '  inference:', '    backend: openai-chat', '    endpoints:', '      - url: ftp://x'],
      'pools.inference.endpoints.0.url',
      '"ftp://x"',
    ],
    [['pools:', '  inference:', '    backend: grpc'], 'pools.inference.backend', '"grpc"'],
    [
      [
        'pools:',
        '  inference:',
        '    backend: openai-chat',
        '    endpoints:',
        '      - url: http://u:s3cret@vllm:8000',
      ],
      'pools.inference.endpoints.0.url',
      '"http://***@vllm:8000"',
    ],
  ])('reports %j by path %s with the value %s', (lines, path, found) => {
    const message = configError(() => resolveConfig(yaml(lines)));
    expect(message).toContain(`${path}: `);
    expect(message).toContain(`(found ${found})`);
    expect(message).not.toContain('s3cret');
  });

  it('lists every offending setting at once', () => {
    const message = configError(() =>
      resolveConfig(yaml(['ingress:', '  port: "abc"', 'worker:', '  maxDeliveries: 0', '  ackWait: soon'])),
    );
    expect(message).toContain('ingress.port');
    expect(message).toContain('worker.maxDeliveries');
    expect(message).toContain('worker.ackWait');
  });

  it('rejects an empty tool list', () => {
    expect(configError(() => resolveConfig('tools: []\n'))).toContain('tools');
  });

  it('rejects a tool naming a missing pool', () => {
    const message = configError(() =>
      resolveConfig(
        yaml(['tools:', '  - name: t', '    template: generate_text', '    pool: gpu', '    model: m']),
      ),
    );
    expect(message).toContain('tools.0.pool');
    expect(message).toContain('no pool "gpu"');
    expect(message).toContain('inference, embeddings');
  });

  it('rejects a tool whose template needs another backend kind', () => {
    const message = configError(() =>
      resolveConfig(
        yaml([
          'tools:',
          '  - name: t',
          '    template: generate_text',
          '    pool: embeddings',
          '    model: m',
        ]),
      ),
    );
    expect(message).toContain('tools.0.template');
    expect(message).toContain('openai-chat');
    expect(message).toContain('openai-embeddings');
  });

  it('rejects a duplicate tool name', () => {
    const message = configError(() =>
      resolveConfig(
        yaml([
          'tools:',
          '  - { name: gen, template: generate_text, pool: inference, model: a }',
          '  - { name: emb, template: embed, pool: embeddings, model: b }',
          '  - { name: gen, template: generate_text, pool: inference, model: c }',
        ]),
      ),
    );
    expect(message).toContain('tools.2.name');
    expect(message).toContain('"gen" is declared twice');
  });

  it.each(['amqp://rabbit:5672', 'http://nats:4222', 'nats:4222', 'memory'])(
    'rejects the broker URL %j',
    (url) => {
      const message = configError(() => resolveConfig(yaml(['broker:', `  url: "${url}"`])));
      expect(message).toContain('broker.url');
      expect(message).toContain('unknown scheme');
    },
  );
});

describe('resolveConfig environment overrides', () => {
  it('overrides the broker URL', () => {
    const c = resolveConfig(yaml(['broker:', '  url: "redis://r:6379"']), {
      MCP_CLUSTER_BROKER_URL: 'nats://n:4222',
    });
    expect(c.brokerUrl).toBe('nats://n:4222');
  });

  it('takes the ingress port as a number, over the file', () => {
    const c = resolveConfig(yaml(['ingress:', '  port: 4000']), { MCP_CLUSTER_INGRESS_PORT: '8080' });
    expect(c.ingress.port).toBe(8080);
  });

  it('reports a non-numeric port override by path and value', () => {
    const message = configError(() => resolveConfig('', { MCP_CLUSTER_INGRESS_PORT: 'abc' }));
    expect(message).toMatch(/ingress\.port: .*\(found "abc"\)/);
  });

  it('applies the other documented overrides', () => {
    const c = resolveConfig('', {
      MCP_CLUSTER_NAMESPACE: 'prod',
      MCP_CLUSTER_INGRESS_HOST: '0.0.0.0',
      MCP_CLUSTER_DELIVERY_HOST: '10.0.0.5',
      MCP_CLUSTER_DELIVERY_PORT: '50051',
      MCP_CLUSTER_DELIVERY_ADVERTISE: 'ingress-0:50051',
      MCP_CLUSTER_SESSION_SECRET: 's3cret',
      MCP_CLUSTER_WORKER_PORT: '9100',
      MCP_CLUSTER_ACK_WAIT: '45s',
    });
    expect(c.namespace).toBe('prod');
    expect(c.ingress.host).toBe('0.0.0.0');
    expect(c.ingress.deliveryHost).toBe('10.0.0.5');
    expect(c.ingress.deliveryPort).toBe(50_051);
    expect(c.ingress.deliveryAdvertise).toBe('ingress-0:50051');
    expect(c.ingress.sessionSecret).toBe('s3cret');
    expect(c.worker.port).toBe(9100);
    expect(c.worker.ackWaitMs).toBe(45_000);
  });

  it('ignores empty and unrelated variables', () => {
    const c = resolveConfig('', {
      MCP_CLUSTER_BROKER_URL: '',
      MCP_CLUSTER_BACKENDS_INFERENCE: '',
      HOME: '/root',
    });
    expect(c).toEqual(resolveConfig(''));
  });

  it('sets a default pool’s endpoints from MCP_CLUSTER_BACKENDS_<POOL>', () => {
    const c = resolveConfig('', { MCP_CLUSTER_BACKENDS_INFERENCE: 'http://a:8000, http://b:8000' });
    expect(c.pools.inference).toMatchObject({
      backend: 'openai-chat',
      endpoints: [
        { url: 'http://a:8000', maxConcurrency: 16 },
        { url: 'http://b:8000', maxConcurrency: 16 },
      ],
    });
    expect(c.pools.embeddings).toMatchObject({ backend: 'openai-embeddings', endpoints: [] });
    expect(c.tools.map((t) => t.name)).toEqual([
      'generate_text',
      'chat',
      'summarize',
      'embed',
      'generate_image',
    ]);
  });

  it('reaches a pool with "-" in its name as "_" (Deployment names cannot hold "_", variables cannot hold "-")', () => {
    const source = yaml([
      'pools:',
      '  embeddings-spot:',
      '    backend: tei',
      'tools:',
      '  - { name: embed_bulk, template: embed, pool: embeddings-spot, model: m }',
    ]);
    expect(backendsVariable('embeddings-spot')).toBe('MCP_CLUSTER_BACKENDS_EMBEDDINGS_SPOT');
    const c = resolveConfig(source, { MCP_CLUSTER_BACKENDS_EMBEDDINGS_SPOT: 'http://127.0.0.1:8080' });
    expect(Object.keys(c.pools)).toEqual(['embeddings-spot']);
    expect(c.pools['embeddings-spot']?.endpoints).toEqual([
      { url: 'http://127.0.0.1:8080', maxConcurrency: 256 },
    ]);
    // Two declared pools the one variable could mean: refused, naming both.
    const both = yaml(['pools:', '  a-b: { backend: tei }', '  a_b: { backend: tei }']);
    expect(() => resolveConfig(both, { MCP_CLUSTER_BACKENDS_A_B: 'http://x:1' })).toThrow(
      /MCP_CLUSTER_BACKENDS_A_B matches pools a-b and a_b/,
    );
  });

  it('gives the embeddings pool its embeddings backend', () => {
    const c = resolveConfig('', { MCP_CLUSTER_BACKENDS_EMBEDDINGS: 'http://e:8001' });
    expect(c.pools.embeddings).toMatchObject({
      backend: 'openai-embeddings',
      endpoints: [{ url: 'http://e:8001' }],
    });
  });

  it('replaces the endpoints of a pool in the file, keeping its other settings', () => {
    const c = resolveConfig(
      yaml([
        'pools:',
        '  inference:',
        '    backend: openai-chat',
        '    maxInFlight: 7',
        '    endpoints:',
        '      - url: http://old:1',
        '  embeddings:',
        '    backend: openai-embeddings',
      ]),
      { MCP_CLUSTER_BACKENDS_INFERENCE: 'http://new:1' },
    );
    expect(c.pools.inference?.endpoints).toEqual([{ url: 'http://new:1', maxConcurrency: 16 }]);
    expect(c.pools.inference?.maxInFlight).toBe(7);
  });

  it('reports a bad endpoint URL from the environment by path', () => {
    const message = configError(() =>
      resolveConfig('', { MCP_CLUSTER_BACKENDS_INFERENCE: 'http://ok:1,ftp://bad' }),
    );
    expect(message).toContain('pools.inference.endpoints.1.url');
    expect(message).toContain('"ftp://bad"');
  });
});

describe('resolveConfig of hostile input', () => {
  const deepBlock = `ingress:\n${Array.from({ length: 1500 }, (_, i) => `${'  '.repeat(i + 1)}a:`).join('\n')} 1\n`;
  const hostile: [string, string, Record<string, string>?][] = [
    ['a top-level list', '- a\n- b\n'],
    ['a top-level scalar', '42\n'],
    ['a top-level string', '"just text"\n'],
    ['a top-level boolean', 'true\n'],
    ['a huge number', 'ingress:\n  port: 1e400\n'],
    ['a huge integer', 'ingress:\n  port: 99999999999999999999999999999\n'],
    ['a huge duration', 'worker:\n  ackWait: 1e400\n'],
    ['deeply nested flow junk', `junk: ${'['.repeat(5000)}${']'.repeat(5000)}\n`],
    ['deeply nested mapping junk', `ingress: ${'{a: '.repeat(3000)}1${'}'.repeat(3000)}\n`],
    ['deeply nested block junk', deepBlock],
    ['moderately nested junk under a known key', `pools: ${'{a: '.repeat(200)}1${'}'.repeat(200)}\n`],
    ['a recursive alias', 'a: &x [*x]\n'],
    ['a recursive alias in a known setting', 'broker: &x\n  url: *x\n'],
    [
      'an alias bomb',
      `a: &a [x, x]\n${Array.from({ length: 30 }, (_, i) => `b${i}: &b${i} [*${i === 0 ? 'a' : `b${i - 1}`}, *${i === 0 ? 'a' : `b${i - 1}`}]`).join('\n')}\n`,
    ],
    ['binary and set tags', 'ingress:\n  port: !!binary aGVsbG8=\n  host: !!set {a, b}\n'],
    ['a prototype key', '__proto__:\n  polluted: true\n'],
    ['a constructor key', 'constructor:\n  prototype:\n    polluted: true\n'],
    ['tabs and stray brackets', '\t\t: :: ][\n'],
    ['control characters', '\u0000\u0001\u0002: \u0007\n'],
    [
      'pools as a number with a backends override',
      'pools: 5\n',
      { MCP_CLUSTER_BACKENDS_INFERENCE: 'http://a:1' },
    ],
    [
      'a pool as a number with a backends override',
      'pools:\n  inference: 5\n',
      { MCP_CLUSTER_BACKENDS_INFERENCE: 'http://a:1' },
    ],
    [
      'pools as a list with a backends override',
      'pools: [1, 2]\n',
      { MCP_CLUSTER_BACKENDS_INFERENCE: 'http://a:1' },
    ],
    ['ingress as a list with a port override', 'ingress: [1]\n', { MCP_CLUSTER_INGRESS_PORT: '80' }],
  ];

  it.each(hostile)('%s throws only a ClusterError INVALID_CONFIG', (_label, source, env) => {
    configError(() => resolveConfig(source, env ?? {}));
  });

  it('leaves Object.prototype alone', () => {
    configError(() => resolveConfig('__proto__:\n  polluted: true\n'));
    configError(() => resolveConfig('pools:\n  __proto__:\n    endpoints: [x]\n'));
    try {
      const c = resolveConfig('', { MCP_CLUSTER_BACKENDS___PROTO__: 'http://a:1' });
      expect(Object.keys(c.pools).sort()).toEqual(['diffusion', 'embeddings', 'inference']);
    } catch (err) {
      expect(err).toBeInstanceOf(ClusterError);
    }
    const plain: Record<string, unknown> = {};
    expect(plain.polluted).toBeUndefined();
    expect(plain.endpoints).toBeUndefined();
  });

  it('survives random bytes as YAML', () => {
    let seed = 12345;
    const next = () => {
      seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31;
      return seed;
    };
    for (let n = 0; n < 300; n++) {
      const length = next() % 200;
      const text = String.fromCharCode(...Array.from({ length }, () => next() % 128));
      try {
        resolveConfig(text);
      } catch (err) {
        expect(err).toBeInstanceOf(ClusterError);
        expect((err as ClusterError).code).toBe('INVALID_CONFIG');
      }
    }
  });
});

describe('autoscaling and planning settings', () => {
  it('reads per-pool scaling and GPU sizing with units', () => {
    const c = resolveConfig(
      yaml([
        'pools:',
        '  gpu:',
        '    backend: openai-chat',
        '    scaling:',
        '      minReplicas: 1',
        '      maxReplicas: 6',
        '      targetQueueWait: 250ms',
        '      batchDrainTarget: 2h',
        '      scaleDownStabilization: 1m',
        '      idleToZero: 30s',
        '      replicaConcurrency: 8',
        '    gpu:',
        '      modelParamsBillions: 8',
        '      kvCachePerToken: 128kb',
        '      contextTokens: 8192',
        '      concurrentSequences: 16',
        'tools:',
        '  - { name: t, template: chat, pool: gpu, model: m }',
        'autoscaler:',
        '  provider: local',
        '  interval: 500ms',
        '  metricsUrls: [http://127.0.0.1:9464/metrics]',
        'planner:',
        '  percentile: 0.99',
        '  gpuTiers:',
        '    - { name: big, memory: 96gb, pricePerHour: 5 }',
      ]),
    );
    expect(c.pools.gpu?.scaling).toMatchObject({
      minReplicas: 1,
      maxReplicas: 6,
      targetQueueWaitMs: 250,
      batchDrainTargetMs: 7_200_000,
      scaleDownStabilizationMs: 60_000,
      idleToZeroMs: 30_000,
      replicaConcurrency: 8,
    });
    expect(c.pools.gpu?.gpu).toEqual({
      modelParamsBillions: 8,
      bytesPerParam: 2,
      kvCacheBytesPerToken: 128 * 1024,
      contextTokens: 8192,
      concurrentSequences: 16,
    });
    expect(c.autoscaler).toMatchObject({
      provider: 'local',
      intervalMs: 500,
      metricsUrls: ['http://127.0.0.1:9464/metrics'],
      kubernetes: { namespace: '', deploymentPrefix: 'mcp-cluster-worker-' },
    });
    expect(c.planner).toEqual({
      targetWaitMs: 1000,
      percentile: 0.99,
      gpuTiers: [{ name: 'big', memoryBytes: 96 * 1024 ** 3, pricePerHour: 5 }],
    });
  });

  it('names the setting when scaling or planner values are out of range', () => {
    const bad = (lines: string[]) => () => resolveConfig(yaml(lines));
    expect(
      bad(['pools:', '  p:', '    backend: tei', '    scaling: { minReplicas: 5, maxReplicas: 2 }']),
    ).toThrow(/pools\.p\.scaling\.minReplicas: 5 is above maxReplicas 2/);
    expect(bad(['pools:', '  p:', '    backend: tei', '    scaling: { targetQueueWait: 0s }'])).toThrow(
      /pools\.p\.scaling\.targetQueueWait: must be above 0/,
    );
    expect(bad(['pools:', '  p:', '    backend: tei', '    scaling: { batchDrainTarget: 0s }'])).toThrow(
      /pools\.p\.scaling\.batchDrainTarget: must be above 0/,
    );
    expect(bad(['pools:', '  p:', '    backend: tei', '    scaling: { batchDrainTarget: 2d }'])).toThrow(
      /pools\.p\.scaling\.batchDrainTarget/,
    );
    expect(bad(['autoscaler: { provider: helm }'])).toThrow(/autoscaler\.provider/);
    expect(bad(['autoscaler: { interval: 10ms }'])).toThrow(/autoscaler\.interval: 10ms is too short/);
    expect(bad(['autoscaler: { prometheusUrl: "ftp://x" }'])).toThrow(/autoscaler\.prometheusUrl/);
    expect(bad(['planner: { percentile: 1 }'])).toThrow(/planner\.percentile/);
    expect(bad(['pools:', '  p:', '    backend: tei', '    gpu: { contextTokens: 10 }'])).toThrow(
      /pools\.p\.gpu\.modelParamsBillions/,
    );
  });

  it('bounds the ingress request limits: nesting depth, and timeouts above 0 with headers within the request', () => {
    const c = resolveConfig(yaml(['ingress: { maxJsonDepth: 200, headersTimeout: 2s, requestTimeout: 1m }']));
    expect(c.ingress).toMatchObject({ maxJsonDepth: 200, headersTimeoutMs: 2000, requestTimeoutMs: 60_000 });
    const bad = (lines: string[]) => () => resolveConfig(yaml(lines));
    expect(bad(['ingress: { maxJsonDepth: 5000 }'])).toThrow(/ingress\.maxJsonDepth: .*1000/);
    expect(bad(['ingress: { maxJsonDepth: 2 }'])).toThrow(/ingress\.maxJsonDepth: .*8/);
    expect(bad(['ingress: { headersTimeout: 0s }'])).toThrow(/ingress\.headersTimeout: must be above 0/);
    expect(bad(['ingress: { requestTimeout: 0 }'])).toThrow(/ingress\.requestTimeout: must be above 0/);
    expect(bad(['ingress: { headersTimeout: 40s }'])).toThrow(
      /ingress\.headersTimeout: 40000ms is above ingress\.requestTimeout \(30000ms\)/,
    );
  });

  it('gives endpoints without maxConcurrency the pool replicaConcurrency', () => {
    const c = resolveConfig(
      yaml(['pools:', '  inference:', '    backend: openai-chat', '    scaling: { replicaConcurrency: 32 }']),
      { MCP_CLUSTER_BACKENDS_INFERENCE: 'http://10.0.0.5:8000' },
    );
    expect(c.pools.inference?.endpoints).toEqual([{ url: 'http://10.0.0.5:8000', maxConcurrency: 32 }]);
  });

  it('takes the provider, Prometheus URL and worker host from the environment', () => {
    const c = resolveConfig('', {
      MCP_CLUSTER_AUTOSCALER_PROVIDER: 'kubernetes',
      MCP_CLUSTER_PROMETHEUS_URL: 'http://prometheus:9090',
      MCP_CLUSTER_WORKER_HOST: '0.0.0.0',
    });
    expect(c.autoscaler.provider).toBe('kubernetes');
    expect(c.autoscaler.prometheusUrl).toBe('http://prometheus:9090');
    expect(c.worker.host).toBe('0.0.0.0');
    expect(resolveConfig('', { MCP_CLUSTER_AUTOSCALER_HOST: '0.0.0.0' }).autoscaler.host).toBe('0.0.0.0');
  });

  it('sizes a GPU without a KV cache when kvCachePerToken is left out', () => {
    const c = resolveConfig(
      yaml([
        'pools:',
        '  e:',
        '    backend: tei',
        '    gpu: { modelParamsBillions: 0.1 }',
        'tools:',
        '  - { name: t, template: embed, pool: e, model: m }',
      ]),
    );
    expect(c.pools.e?.gpu).toMatchObject({
      kvCacheBytesPerToken: 0,
      contextTokens: 0,
      concurrentSequences: 1,
    });
  });
});

describe('auth settings', () => {
  it('default to mode none with no scopes anywhere', () => {
    const c = resolveConfig('');
    expect(c.auth).toMatchObject({
      mode: 'none',
      allowUnauthenticated: false,
      resource: '',
      requiredScopes: [],
      tenants: [],
      oauth: { issuer: '', jwksUri: '', audience: '', tenantClaim: 'tenant', clockSkewMs: 30_000 },
      apiKeys: { file: '', pollIntervalMs: 2000 },
    });
    expect(c.tools.every((t) => t.scopes.length === 0)).toBe(true);
  });

  it('give each tool its pool scopes unless it names its own', () => {
    const c = resolveConfig(
      yaml([
        'pools:',
        '  embeddings: { backend: openai-embeddings, scopes: [pool:embeddings] }',
        'tools:',
        '  - { name: embed, template: embed, pool: embeddings, model: m }',
        '  - { name: embed_public, template: embed, pool: embeddings, model: m, scopes: [] }',
        '  - { name: embed_admin, template: embed, pool: embeddings, model: m, scopes: [tools:admin, pool:embeddings] }',
      ]),
    );
    expect(c.tools.map((t) => [t.name, t.scopes])).toEqual([
      ['embed', ['pool:embeddings']],
      ['embed_public', []],
      ['embed_admin', ['tools:admin', 'pool:embeddings']],
    ]);
  });

  it('take the mode, resource, issuer and keys file from the environment', () => {
    const c = resolveConfig('', {
      MCP_CLUSTER_AUTH_MODE: 'oauth+api-keys',
      MCP_CLUSTER_AUTH_RESOURCE: 'https://mcp.example.com/mcp',
      MCP_CLUSTER_OAUTH_ISSUER: 'https://auth.example.com',
      MCP_CLUSTER_API_KEYS_FILE: '/etc/mcp-cluster/keys.yaml',
    });
    expect(c.auth).toMatchObject({
      mode: 'oauth+api-keys',
      resource: 'https://mcp.example.com/mcp',
      oauth: { issuer: 'https://auth.example.com' },
      apiKeys: { file: '/etc/mcp-cluster/keys.yaml' },
    });
  });

  it('refuse oauth without the resource or the issuer, naming both settings', () => {
    const message = configError(() => resolveConfig(yaml(['auth: { mode: oauth }'])));
    expect(message).toContain('auth.resource');
    expect(message).toContain('auth.oauth.issuer');
  });

  it('refuse api-keys without a keys file, pointing at keys create', () => {
    const message = configError(() => resolveConfig(yaml(['auth: { mode: api-keys }'])));
    expect(message).toMatch(/auth\.apiKeys\.file: .*keys create/);
  });

  it.each([
    ['auth: { mode: basic }', /auth\.mode/],
    ['auth: { requiredScopes: ["has space"] }', /auth\.requiredScopes\.0: a scope is/],
    ['auth: { requiredScopes: ["quote\\"d"] }', /auth\.requiredScopes\.0/],
    ['auth: { resource: "ftp://x/mcp" }', /auth\.resource/],
    ['auth: { oauth: { algorithms: [none] } }', /auth\.oauth\.algorithms\.0/],
    ['auth: { oauth: { algorithms: [] } }', /auth\.oauth\.algorithms/],
    ['auth: { oauth: { clockSkew: forever } }', /auth\.oauth\.clockSkew/],
    ['auth: { tenants: ["a b"] }', /auth\.tenants\.0/],
    ['auth: { token: x }', /auth: .*"token"/],
    ['pools: { inference: { backend: openai-chat, scopes: "pool:inference" } }', /pools\.inference\.scopes/],
  ])('reject %s', (text, expected) => {
    expect(configError(() => resolveConfig(`${text}\n`))).toMatch(expected);
  });
});
