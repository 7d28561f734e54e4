import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  CONFORMANCE_PNG,
  CONFORMANCE_TEXT,
  CONFORMANCE_TOOLS,
  CONFORMANCE_WAV,
  JSON_SCHEMA_2020_12_INPUT,
} from '../workers/conformance/index.js';
import {
  REVISIONS,
  type Requirements,
  readRequirements,
  readResults,
  type ScenarioResult,
  score,
  suiteRevisions,
} from './conformance/run.js';
import { type SpawnedBroker, startNatsServer, uniqueNamespace } from './support/brokers.js';
import { resolveConfig } from './support/families.js';
import { connectClient, post2026, type TestClient } from './support/mcp-clients.js';
import { startUp, type UpProcess, writeConfig } from './support/processes.js';

// The `conformance` family's fixtures (the tools the official MCP conformance suite calls) through
// the whole path: `mcp-cluster up --conformance` on NATS JetStream, so each call goes ingress →
// JetStream → worker → gRPC delivery → ingress, asked by the official clients of both protocol eras
// (v2 client on 2026-07-28, v1 SDK client with a 2025-11-25 session). Content blocks are compared
// exactly, media bytes included. The pool is off by default.

const base64 = (bytes: Uint8Array): string => Buffer.from(bytes).toString('base64');

describe('conformance fixtures through ingress, NATS, worker and gRPC delivery', () => {
  let broker: SpawnedBroker;
  let up: UpProcess;
  const clients: Record<'v1' | 'v2', TestClient | undefined> = { v1: undefined, v2: undefined };

  beforeAll(async () => {
    broker = await startNatsServer();
    const config = writeConfig(`cluster: { namespace: ${uniqueNamespace('conf')} }\n`);
    up = await startUp(['--conformance', '--broker', broker.url, '--config', config]);
    clients.v1 = await connectClient('v1', up.mcpUrl);
    clients.v2 = await connectClient('v2', up.mcpUrl);
  });
  afterAll(async () => {
    await clients.v1?.close();
    await clients.v2?.close();
    await up?.stop();
    await broker?.dispose();
  });

  it('runs on the gRPC delivery path (a shared broker, not the in-process shortcut)', () => {
    expect(up.banner).toContain(`embedded: ${broker.url} queue`);
    expect(up.banner).toContain('test_simple_text');
  });

  describe.each(['v1', 'v2'] as const)('%s client', (kind) => {
    const client = (): TestClient => clients[kind] as TestClient;

    it('lists every fixture, the 2020-12 schema as written', async () => {
      const tools = await client().listTools();
      const names = tools.map((t) => t.name);
      for (const name of CONFORMANCE_TOOLS) expect(names).toContain(name);
      const schemaTool = tools.find((t) => t.name === 'json_schema_2020_12_tool');
      expect(schemaTool?.inputSchema).toEqual(JSON_SCHEMA_2020_12_INPUT);
    });

    it('test_simple_text: one text block', async () => {
      const result = await client().callTool('test_simple_text', {});
      expect(result.content).toEqual([{ type: 'text', text: CONFORMANCE_TEXT.simple }]);
      expect(result.isError).not.toBe(true);
    });

    it('test_image_content: the PNG bytes, base64, with their mimeType', async () => {
      const result = await client().callTool('test_image_content', {});
      expect(result.content).toEqual([
        { type: 'image', data: base64(CONFORMANCE_PNG()), mimeType: 'image/png' },
      ]);
      const png = Buffer.from((result.content[0] as { data: string }).data, 'base64');
      expect(png.subarray(1, 4).toString('ascii')).toBe('PNG');
    });

    it('test_audio_content: the WAV bytes, base64, audio/wav', async () => {
      const result = await client().callTool('test_audio_content', {});
      expect(result.content).toEqual([
        { type: 'audio', data: base64(CONFORMANCE_WAV()), mimeType: 'audio/wav' },
      ]);
      const wav = Buffer.from((result.content[0] as { data: string }).data, 'base64');
      expect(wav.subarray(0, 4).toString('ascii')).toBe('RIFF');
      expect(wav.subarray(8, 12).toString('ascii')).toBe('WAVE');
    });

    it('test_embedded_resource: the resource with uri, mimeType and text', async () => {
      const result = await client().callTool('test_embedded_resource', {});
      expect(result.content).toEqual([
        {
          type: 'resource',
          resource: {
            uri: 'test://embedded-resource',
            mimeType: 'text/plain',
            text: CONFORMANCE_TEXT.embedded,
          },
        },
      ]);
    });

    it('test_multiple_content_types: text, image and resource, in order', async () => {
      const result = await client().callTool('test_multiple_content_types', {});
      expect(result.content).toEqual([
        { type: 'text', text: CONFORMANCE_TEXT.mixed },
        { type: 'image', data: base64(CONFORMANCE_PNG()), mimeType: 'image/png' },
        {
          type: 'resource',
          resource: {
            uri: 'test://mixed-content-resource',
            mimeType: 'application/json',
            text: CONFORMANCE_TEXT.mixedResource,
          },
        },
      ]);
    });

    it('test_error_handling: a tool error (isError) with its message', async () => {
      const result = await client().callTool('test_error_handling', {});
      expect(result.isError).toBe(true);
      expect(result.content).toEqual([{ type: 'text', text: CONFORMANCE_TEXT.error }]);
    });

    it('test_tool_with_progress: progress 0, 50, 100 of 100 reach the caller, then the result', async () => {
      const progress: { progress: number; total?: number }[] = [];
      const result = await client().callTool(
        'test_tool_with_progress',
        {},
        { onProgress: (p) => progress.push({ progress: p.progress, total: p.total }) },
      );
      expect(progress).toEqual([
        { progress: 0, total: 100 },
        { progress: 50, total: 100 },
        { progress: 100, total: 100 },
      ]);
      expect(result.content).toEqual([{ type: 'text', text: CONFORMANCE_TEXT.progress }]);
    });

    it('json_schema_2020_12_tool: arguments are checked against the 2020-12 schema', async () => {
      const ok = await client().callTool('json_schema_2020_12_tool', {
        name: 'a',
        address: { city: 'b' },
        email: 'a@example.com',
      });
      expect(ok.content).toEqual([{ type: 'text', text: CONFORMANCE_TEXT.schema }]);
      // additionalProperties: false refuses an unknown argument, naming it: a tool error, as MCP wants.
      const unknown = await client().callTool('json_schema_2020_12_tool', {
        bogus: 1,
        email: 'a@example.com',
      });
      expect(unknown.isError).toBe(true);
      expect(unknown.content).toEqual([
        {
          type: 'text',
          text: 'INVALID_ARGUMENTS: invalid arguments for json_schema_2020_12_tool: arguments has unknown property "bogus"',
        },
      ]);
      // The `$ref` into `$defs` is followed.
      const nested = await client().callTool('json_schema_2020_12_tool', {
        address: { city: 5 },
        email: 'a@example.com',
      });
      expect(nested.isError).toBe(true);
      expect(JSON.stringify(nested.content)).toContain('arguments.address.city must be string');
      // if/then/else: contactMethod "phone" makes phone required, which an email alone does not meet.
      const conditional = await client().callTool('json_schema_2020_12_tool', {
        contactMethod: 'phone',
        email: 'a@example.com',
      });
      expect(conditional.isError).toBe(true);
      expect((conditional.content[0] as { text: string }).text).toContain(
        'arguments is missing required property "phone"',
      );
      const phone = await client().callTool('json_schema_2020_12_tool', {
        contactMethod: 'phone',
        phone: '1',
      });
      expect(phone.isError).not.toBe(true);
    });
  });

  it('checks Mcp-Param headers against the x-mcp-header argument on 2026-07-28, not on 2025', async () => {
    const call = (headers: Record<string, string>) =>
      post2026(
        up.mcpUrl,
        'tools/call',
        { name: 'test_x_mcp_header', arguments: { region: 'eu-west' } },
        { headers },
      );
    const ok = await call({ 'Mcp-Param-Region': 'eu-west' });
    expect(ok.status).toBe(200);
    expect(ok.body.result?.content).toEqual([{ type: 'text', text: 'Region: eu-west' }]);
    const wrapped = await call({
      'Mcp-Param-Region': `=?base64?${Buffer.from('eu-west').toString('base64')}?=`,
    });
    expect(wrapped.status).toBe(200);
    const bad: Record<string, string>[] = [
      {},
      { 'Mcp-Param-Region': 'us-east' },
      { 'Mcp-Param-Region': '=?base64?ZXU?=' },
    ];
    for (const headers of bad) {
      const refused = await call(headers);
      expect(refused.status).toBe(400);
      expect(refused.body.error).toMatchObject({ code: -32020, data: { code: 'HEADER_MISMATCH' } });
    }
    // The header predates nothing a 2025 client sends: its calls are not checked.
    const legacy = await (clients.v1 as TestClient).callTool('test_x_mcp_header', { region: 'eu-west' });
    expect(legacy.content).toEqual([{ type: 'text', text: 'Region: eu-west' }]);
    const listed = (await (clients.v2 as TestClient).listTools()).find((t) => t.name === 'test_x_mcp_header');
    expect(listed?.inputSchema).toMatchObject({ properties: { region: { 'x-mcp-header': 'Region' } } });
  });
});

describe('conformance pool off by default', () => {
  let up: UpProcess;
  let client: TestClient | undefined;
  beforeAll(async () => {
    up = await startUp([]);
    client = await connectClient('v2', up.mcpUrl);
  });
  afterAll(async () => {
    await client?.close();
    await up?.stop();
  });

  it('serves no fixture tool and refuses a call to one', async () => {
    const names = (await (client as TestClient).listTools()).map((t) => t.name);
    for (const name of CONFORMANCE_TOOLS) expect(names).not.toContain(name);
    expect(names.length).toBeGreaterThan(0);
    const answer = await (client as TestClient).callTool('test_simple_text', {}).then(
      (r) => JSON.stringify(r),
      (err: Error) => err.message,
    );
    expect(answer).toMatch(/test_simple_text/);
    expect(answer).not.toContain(CONFORMANCE_TEXT.simple);
  });
});

describe('switching the conformance pool on in the configuration', () => {
  const conformanceTools = (yaml: string) =>
    resolveConfig(yaml)
      .tools.filter((t) => t.pool === 'conformance')
      .map((t) => t.name);

  it('is absent from the built-in configuration', () => {
    const config = resolveConfig('');
    expect(Object.keys(config.pools)).not.toContain('conformance');
    expect(conformanceTools('')).toEqual([]);
  });

  it('conformance: { enabled: true } adds the pool beside the built-in ones, with every fixture', () => {
    const config = resolveConfig('conformance: { enabled: true }\n');
    expect(Object.keys(config.pools).sort()).toEqual(['conformance', 'diffusion', 'embeddings', 'inference']);
    expect(config.pools.conformance?.backend).toBe('conformance');
    expect(conformanceTools('conformance: { enabled: true }\n')).toEqual([...CONFORMANCE_TOOLS]);
    expect(conformanceTools('conformance: { enabled: false }\n')).toEqual([]);
  });

  it('adds the fixtures to a file that lists its own tools, keeping a fixture the file declares', () => {
    const yaml = [
      'conformance: { enabled: true }',
      'pools: { inference: { backend: openai-chat } }',
      'tools:',
      '  - { name: chat, template: chat, pool: inference, model: m }',
      '  - { name: test_simple_text, template: test_simple_text, pool: conformance, model: mine }',
    ].join('\n');
    const config = resolveConfig(yaml);
    expect(config.tools.map((t) => t.name)).toEqual(['chat', ...CONFORMANCE_TOOLS]);
    expect(config.tools.find((t) => t.name === 'test_simple_text')?.model).toBe('mine');
  });

  it('declaring the pool brings its fixtures', () => {
    expect(conformanceTools('pools: { conformance: { backend: conformance } }\n')).toEqual([
      ...CONFORMANCE_TOOLS,
    ]);
  });

  it('MCP_CLUSTER_CONFORMANCE=true (what up --conformance sets) switches it on', () => {
    expect(Object.keys(resolveConfig('', { MCP_CLUSTER_CONFORMANCE: 'true' }).pools)).toContain(
      'conformance',
    );
  });

  it.each([
    ['conformance: yes\n', 'found "yes"'],
    ['conformance: { enabled: "on" }\n', 'found {"enabled":"on"}'],
    ['conformance: { enabled: true, extra: 1 }\n', 'found {"enabled":true,"extra":1}'],
  ])('refuses a malformed switch %j with a message naming it', (yaml, found) => {
    expect(() => resolveConfig(yaml)).toThrow(
      /conformance: expected \{ enabled: true \} or \{ enabled: false \}/,
    );
    expect(() => resolveConfig(yaml)).toThrow(found);
  });
});

describe('the conformance runner reading the suite results', () => {
  it('runs every revision the pinned suite has a requirement set for', () => {
    expect([...REVISIONS]).toEqual(suiteRevisions());
  });

  it.each(REVISIONS)('takes what %s scores from the suite, the fixture tools included', (revision) => {
    const requirements = readRequirements(revision);
    for (const scenario of [
      'tools-list',
      'tools-call-simple-text',
      'tools-call-image',
      'tools-call-audio',
      'tools-call-embedded-resource',
      'tools-call-mixed-content',
      'tools-call-error',
      'tools-call-with-progress',
      'resources-read-text',
      'prompts-get-simple',
      'completion-complete',
    ]) {
      expect(requirements.scored).toContain(scenario);
    }
    // Pending in the suite at both revisions: run and listed, never scored.
    expect(requirements.scored).not.toContain('json-schema-2020-12');
    expect(requirements.notScored).toContainEqual(
      expect.objectContaining({ scenario: 'json-schema-2020-12', reason: 'pending' }),
    );
    // Only the server leg: a client scenario is nothing a server run can produce.
    expect(requirements.notScored.map((n) => n.scenario)).not.toContain('json-schema-2020-12-preservation');
  });

  it('scores each revision at its own wire: 2025-11-25 the stateful handshake, 2026-07-28 stateless', () => {
    expect(readRequirements('2025-11-25').scored).toContain('server-initialize');
    expect(readRequirements('2026-07-28').scored).not.toContain('server-initialize');
    expect(readRequirements('2026-07-28').scored).toContain('server-stateless');
    expect(
      readRequirements('2026-07-28').notScored.filter((n) => n.reason === 'extension').length,
    ).toBeGreaterThan(0);
  });

  it('fails on a FAILURE in a scored scenario or a scored one without result, never on an unscored one', () => {
    const requirements: Requirements = {
      revision: 'r',
      scored: ['a', 'b', 'c'],
      notScored: [
        { scenario: 'x', reason: 'pending' },
        { scenario: 'y', reason: 'extension', note: 'why' },
        { scenario: 'z', reason: 'added-after-release' },
      ],
    };
    const result = (scenario: string, passed: number, failures: string[] = []): [string, ScenarioResult] => [
      scenario,
      { scenario, passed, failed: failures.length, failures },
    ];
    const verdict = score(
      requirements,
      new Map([result('a', 3), result('b', 2, ['b1: wrong']), result('x', 0, ['x1: no']), result('y', 1)]),
    );
    expect(verdict.scored.map((s) => [s.scenario, s.ok])).toEqual([
      ['a', true],
      ['b', false],
      ['c', false],
    ]);
    expect([verdict.passed, verdict.failed]).toEqual([1, 2]);
    expect(verdict.unscored.map((u) => [u.scenario, u.reason, u.state])).toEqual([
      ['x', 'pending', 'fail'],
      ['y', 'extension', 'pass'],
      ['z', 'added-after-release', 'none'],
    ]);
    expect(
      score(requirements, new Map([result('a', 1), result('b', 1), result('c', 1), result('x', 0, ['x1'])]))
        .failed,
    ).toBe(0);
  });

  it('counts FAILURE checks per scenario folder and ignores other entries', async () => {
    const { mkdtempSync, mkdirSync, writeFileSync } = await import('node:fs');
    const { join } = await import('node:path');
    const { tmpdir } = await import('node:os');
    const dir = mkdtempSync(join(tmpdir(), 'conf-results-'));
    const write = (folder: string, checks: unknown[]) => {
      mkdirSync(join(dir, folder));
      writeFileSync(join(dir, folder, 'checks.json'), JSON.stringify(checks));
    };
    write('server-tools-call-image-2026-12-05T23-41-11-866Z', [{ id: 'a', status: 'SUCCESS' }]);
    write('server-json-schema-2020-12-2026-12-05T23-41-12-001Z', [
      { id: 'b', status: 'SUCCESS' },
      { id: 'c', status: 'FAILURE', errorMessage: '$defs missing' },
      { id: 'd', status: 'WARNING' },
    ]);
    mkdirSync(join(dir, 'unrelated'));
    const results = readResults(dir);
    expect([...results.keys()].sort()).toEqual(['json-schema-2020-12', 'tools-call-image']);
    expect(results.get('tools-call-image')).toEqual({
      scenario: 'tools-call-image',
      passed: 1,
      failed: 0,
      failures: [],
    });
    expect(results.get('json-schema-2020-12')).toEqual({
      scenario: 'json-schema-2020-12',
      passed: 1,
      failed: 1,
      failures: ['c: $defs missing'],
    });
  });
});
