import { readFileSync } from 'node:fs';
import {
  Client as ClientV2,
  ProtocolError,
  StreamableHTTPClientTransport as TransportV2,
} from '@modelcontextprotocol/client';
import { Client as ClientV1 } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport as TransportV1 } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { McpError } from '@modelcontextprotocol/sdk/types.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openBroker } from '../services/cli/index.js';
import { type Broker, inProcessDelivery } from '../services/core/index.js';
import { type Ingress, startIngress } from '../services/ingress/index.js';
import { resolveConfig } from './support/families.js';

/** The catalog the conformance suite reads, as operators would ship it. */
const CATALOG = readFileSync(new URL('../deploy/conformance/catalog.yaml', import.meta.url), 'utf8');
const PNG_BASE64 =
  'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==';
const MODERN = '2026-07-28';
const INVALID_PARAMS = -32602;
const METHOD_NOT_FOUND = -32601;

const connectV1 = async (url: string) => {
  const client = new ClientV1({ name: 'catalog-v1', version: '1.0.0' });
  await client.connect(new TransportV1(new URL(url)));
  return client;
};
const connectV2 = async (url: string) => {
  const client = new ClientV2(
    { name: 'catalog-v2', version: '1.0.0' },
    { versionNegotiation: { mode: { pin: MODERN } } },
  );
  await client.connect(new TransportV2(new URL(url)));
  return client;
};

/** The JSON-RPC error `run` fails with (either SDK's error class). */
async function rpcError(run: () => Promise<unknown>): Promise<{ code: number; message: string }> {
  try {
    await run();
  } catch (err) {
    if (err instanceof McpError || err instanceof ProtocolError)
      return { code: err.code, message: err.message };
    throw err;
  }
  throw new Error('expected a JSON-RPC error, got a result');
}

/** What each client era answers, through one interface (v1 and v2 clients share these methods). */
type AnyClient = Pick<
  ClientV1,
  | 'listResources'
  | 'listResourceTemplates'
  | 'readResource'
  | 'listPrompts'
  | 'getPrompt'
  | 'complete'
  | 'subscribeResource'
  | 'unsubscribeResource'
  | 'getServerCapabilities'
  | 'close'
>;

describe('catalog: resources, templates, prompts and completions from the config', () => {
  let broker: Broker;
  let ingress: Ingress;
  let bare: Ingress;

  beforeAll(async () => {
    broker = await openBroker({ url: 'memory:', namespace: 'catalog', pools: ['inference', 'embeddings'] });
    const config = resolveConfig(`${CATALOG}\ncluster: { namespace: catalog }\ningress: { port: 0 }`, {});
    ingress = await startIngress(config, broker, inProcessDelivery());
    const plain = resolveConfig('cluster: { namespace: catalog }\ningress: { port: 0 }', {});
    bare = await startIngress(plain, broker, inProcessDelivery());
  });
  afterAll(async () => {
    await ingress?.shutdown();
    await bare?.shutdown();
    await broker?.close();
  });

  // 2026-07-28 has no resources/subscribe (its clients listen with subscriptions/listen, which
  // the SDK serves): only the 2025 era subscribes here.
  const eras: [string, (url: string) => Promise<AnyClient>, boolean][] = [
    ['v1 client (2025-11-25)', connectV1, true],
    ['v2 client (2026-07-28)', async (url) => (await connectV2(url)) as unknown as AnyClient, false],
  ];

  describe.each(eras)('%s', (_era, connect, subscribes) => {
    let client: AnyClient;
    beforeAll(async () => {
      client = await connect(ingress.url);
    });
    afterAll(async () => {
      await client?.close();
    });

    it('advertises resources (with subscribe), prompts and completions', () => {
      const caps = client.getServerCapabilities();
      expect(caps?.resources).toEqual({ subscribe: true, listChanged: false });
      expect(caps?.prompts).toEqual({ listChanged: false });
      expect(caps?.completions).toEqual({});
      expect(caps?.tools).toBeDefined();
    });

    it('lists resources and templates', async () => {
      const { resources } = await client.listResources();
      expect(resources.map((r) => r.uri)).toEqual([
        'test://static-text',
        'test://static-binary',
        'test://watched-resource',
      ]);
      expect(resources[0]).toMatchObject({ name: 'static-text', mimeType: 'text/plain' });
      const { resourceTemplates } = await client.listResourceTemplates();
      expect(resourceTemplates).toEqual([
        {
          uriTemplate: 'test://template/{id}/data',
          name: 'template-data',
          description: 'A resource template whose content names the requested id',
          mimeType: 'application/json',
        },
      ]);
    });

    it('reads text, binary and templated resources', async () => {
      expect((await client.readResource({ uri: 'test://static-text' })).contents).toEqual([
        {
          uri: 'test://static-text',
          mimeType: 'text/plain',
          text: 'This is the content of the static text resource.',
        },
      ]);
      expect((await client.readResource({ uri: 'test://static-binary' })).contents).toEqual([
        { uri: 'test://static-binary', mimeType: 'image/png', blob: PNG_BASE64 },
      ]);
      const templated = await client.readResource({ uri: 'test://template/123/data' });
      expect(templated.contents).toEqual([
        {
          uri: 'test://template/123/data',
          mimeType: 'application/json',
          text: '{"id":"123","templateTest":true,"data":"Data for ID: 123"}',
        },
      ]);
      expect(JSON.parse((templated.contents[0] as { text: string }).text)).toEqual({
        id: '123',
        templateTest: true,
        data: 'Data for ID: 123',
      });
    });

    it('answers an unknown or hostile URI with Invalid params naming the lists', async () => {
      for (const uri of ['test://nope', 'test://template/1/2/data', 'test://template//data']) {
        const error = await rpcError(() => client.readResource({ uri }));
        expect(error.code).toBe(INVALID_PARAMS);
        expect(error.message).toContain('resources/list and resources/templates/list');
      }
    });

    it.runIf(subscribes)('subscribes to known resources and refuses unknown ones', async () => {
      await client.subscribeResource({ uri: 'test://watched-resource' });
      await client.unsubscribeResource({ uri: 'test://watched-resource' });
      const error = await rpcError(() => client.subscribeResource({ uri: 'test://missing' }));
      expect(error.code).toBe(INVALID_PARAMS);
    });

    it('lists prompts with their arguments', async () => {
      const { prompts } = await client.listPrompts();
      expect(prompts.map((p) => p.name)).toEqual([
        'test_simple_prompt',
        'test_prompt_with_arguments',
        'test_prompt_with_embedded_resource',
        'test_prompt_with_image',
        'test_input_required_result_prompt',
      ]);
      expect(prompts[1]?.arguments).toEqual([
        { name: 'arg1', description: 'First test argument', required: true },
        { name: 'arg2', description: 'Second test argument', required: true },
      ]);
    });

    it('renders prompts: text, arguments substituted, an embedded resource, an image', async () => {
      expect((await client.getPrompt({ name: 'test_simple_prompt' })).messages).toEqual([
        { role: 'user', content: { type: 'text', text: 'This is a simple prompt for testing.' } },
      ]);
      const withArgs = await client.getPrompt({
        name: 'test_prompt_with_arguments',
        arguments: { arg1: 'hello', arg2: 'world' },
      });
      expect(withArgs.messages).toEqual([
        {
          role: 'user',
          content: { type: 'text', text: "Prompt with arguments: arg1='hello', arg2='world'" },
        },
      ]);
      const embedded = await client.getPrompt({
        name: 'test_prompt_with_embedded_resource',
        arguments: { resourceUri: 'test://example-resource' },
      });
      expect(embedded.messages[0]?.content).toEqual({
        type: 'resource',
        resource: {
          uri: 'test://example-resource',
          mimeType: 'text/plain',
          text: 'Embedded resource content for testing.',
        },
      });
      const image = await client.getPrompt({ name: 'test_prompt_with_image' });
      expect(image.messages[0]?.content).toEqual({ type: 'image', data: PNG_BASE64, mimeType: 'image/png' });
    });

    it('refuses an unknown prompt, a missing argument and an unknown argument', async () => {
      const unknown = await rpcError(() => client.getPrompt({ name: 'nope' }));
      expect(unknown.code).toBe(INVALID_PARAMS);
      expect(unknown.message).toContain('unknown prompt "nope"');
      expect(unknown.message).toContain('test_simple_prompt');
      const missing = await rpcError(() =>
        client.getPrompt({ name: 'test_prompt_with_arguments', arguments: { arg1: 'a' } }),
      );
      expect(missing.code).toBe(INVALID_PARAMS);
      expect(missing.message).toContain('needs argument "arg2"');
      const extra = await rpcError(() =>
        client.getPrompt({ name: 'test_simple_prompt', arguments: { color: 'red' } }),
      );
      expect(extra.code).toBe(INVALID_PARAMS);
      expect(extra.message).toContain('takes no argument "color"');
    });

    it('completes prompt arguments and template variables by prefix', async () => {
      const arg1 = await client.complete({
        ref: { type: 'ref/prompt', name: 'test_prompt_with_arguments' },
        argument: { name: 'arg1', value: 'teste' },
      });
      expect(arg1.completion).toEqual({ values: ['tested'], total: 1, hasMore: false });
      const arg2 = await client.complete({
        ref: { type: 'ref/prompt', name: 'test_prompt_with_arguments' },
        argument: { name: 'arg2', value: '' },
      });
      expect(arg2.completion.values).toEqual([]);
      const id = await client.complete({
        ref: { type: 'ref/resource', uri: 'test://template/{id}/data' },
        argument: { name: 'id', value: '4' },
      });
      expect(id.completion.values).toEqual(['456']);
    });

    it('refuses completions for unknown prompts, arguments, templates and variables', async () => {
      const cases = [
        [{ type: 'ref/prompt', name: 'nope' }, 'arg1', 'unknown prompt "nope"'],
        [{ type: 'ref/prompt', name: 'test_prompt_with_arguments' }, 'arg9', 'has no argument "arg9"'],
        [{ type: 'ref/resource', uri: 'test://other/{x}' }, 'x', 'no resource template "test://other/{x}"'],
        [{ type: 'ref/resource', uri: 'test://template/{id}/data' }, 'name', 'has no variable "name"'],
      ] as const;
      for (const [ref, name, text] of cases) {
        const error = await rpcError(() => client.complete({ ref, argument: { name, value: '' } }));
        expect(error.code).toBe(INVALID_PARAMS);
        expect(error.message).toContain(text);
      }
    });
  });

  describe.each(['2025-06-18', MODERN])('malformed params on %s', (revision) => {
    const post = async (method: string, params: Record<string, unknown>) => {
      const modern = revision === MODERN;
      const res = await fetch(ingress.url, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          accept: 'application/json, text/event-stream',
          'mcp-protocol-version': revision,
          ...(modern ? { 'mcp-method': method } : {}),
          ...(modern && typeof (params.name ?? params.uri) === 'string'
            ? { 'mcp-name': String(params.name ?? params.uri) }
            : {}),
        },
        body: JSON.stringify({
          jsonrpc: '2.0',
          id: 9,
          method,
          params: modern
            ? {
                ...params,
                _meta: {
                  'io.modelcontextprotocol/protocolVersion': MODERN,
                  'io.modelcontextprotocol/clientInfo': { name: 'catalog-raw', version: '1' },
                  'io.modelcontextprotocol/clientCapabilities': {},
                },
              }
            : params,
        }),
      });
      const text = await res.text();
      const data = text.split('\n').find((l) => l.startsWith('data:')) ?? `data:${text}`;
      return { status: res.status, body: JSON.parse(data.slice(5)) as { error?: unknown } };
    };
    const cases: [string, Record<string, unknown>, string][] = [
      ['resources/read', {}, 'uri'],
      ['resources/read', { uri: 42 }, 'uri'],
      ['prompts/get', { name: 'test_prompt_with_arguments', arguments: { arg1: 5, arg2: 'x' } }, 'arg1'],
      ['prompts/get', {}, 'name'],
      ['completion/complete', { ref: { type: 'ref/prompt', name: 'test_simple_prompt' } }, 'argument'],
      ['completion/complete', { ref: { type: 'ref/other' }, argument: { name: 'a', value: '' } }, 'ref'],
    ];
    it.each(cases)('%s %j gets Invalid params naming %s, not a 5xx', async (method, params, field) => {
      const answer = await post(method, params);
      expect(answer.status).toBeLessThan(500);
      expect(answer.body.error).toMatchObject({
        code: INVALID_PARAMS,
        message: expect.stringContaining(field),
      });
    });
  });

  it('advertises no resources, prompts or completions when none are configured (both eras)', async () => {
    const v1 = await connectV1(bare.url);
    const v2 = await connectV2(bare.url);
    try {
      for (const client of [v1, v2] as unknown as AnyClient[]) {
        const caps = client.getServerCapabilities();
        expect(caps?.tools).toBeDefined();
        expect(caps?.resources).toBeUndefined();
        expect(caps?.prompts).toBeUndefined();
        expect(caps?.completions).toBeUndefined();
      }
      expect((await rpcError(() => v1.listResources())).code).toBe(METHOD_NOT_FOUND);
      expect((await rpcError(() => v1.listPrompts())).code).toBe(METHOD_NOT_FOUND);
    } finally {
      await v1.close();
      await v2.close();
    }
  });
});

describe('catalog config validation', () => {
  const problems = (yaml: string) => {
    try {
      resolveConfig(yaml, {});
    } catch (err) {
      return (err as Error).message;
    }
    throw new Error('expected the config to be refused');
  };

  it('names the path of each bad entry', () => {
    const message = problems(`
resources:
  - { uri: not a uri, name: a, text: x }
  - { uri: "docs://b", name: b }
  - { uri: "docs://c", name: c, blob: "not base64!" }
  - { uri: "docs://c", name: c2, text: y }
resourceTemplates:
  - { uriTemplate: "docs://{id", name: t, text: x }
  - { uriTemplate: "docs://pages/{id}", name: u, text: "{{page}}", completions: { page: [a] } }
  - { uriTemplate: "docs://fixed", name: v, text: x }
prompts:
  - name: p
    arguments: [{ name: a }, { name: a }]
    messages: [{ role: user, content: { type: text, text: "{{b}}" } }]
  - { name: q, messages: [] }
  - { name: r, messages: [{ role: system, content: { type: text, text: x } }] }
  - { name: s, messages: [{ role: user, content: { type: video, data: x } }] }
`);
    expect(message).toContain('resources.0.uri: must be an absolute URI');
    expect(message).toContain('resources.1: give exactly one of `text` (inline text) or `blob` (base64)');
    expect(message).toContain('resources.2.blob: must be base64');
    expect(message).toContain('resources.3: uri "docs://c" is listed twice');
    expect(message).toContain('resourceTemplates.0.uriTemplate: has an unbalanced "{" or "}"');
    expect(message).toContain(
      'resourceTemplates.1.text: uses {{page}}, which is not a variable of the template (id)',
    );
    expect(message).toContain('resourceTemplates.1.completions.page: is not a variable of the template (id)');
    expect(message).toContain('resourceTemplates.2.uriTemplate: has no variables');
    expect(message).toContain('prompts.0.arguments: names an argument twice');
    expect(message).toContain(
      'prompts.0.messages.0.content: uses {{b}}, which is not a declared argument (a, a)',
    );
    expect(message).toContain('prompts.1.messages:');
    expect(message).toContain('prompts.2.messages.0.role:');
    expect(message).toContain('prompts.3.messages.0.content.type:');
  });

  it('accepts the conformance catalog on its own, every other setting at its default', () => {
    const config = resolveConfig(CATALOG, {});
    expect(config.resources).toHaveLength(3);
    expect(config.resourceTemplates).toHaveLength(1);
    expect(config.prompts).toHaveLength(5);
    expect(config.prompts[4]?.arguments[0]?.ask).toBe('What context should the prompt use?');
  });
});
