import { describe, expect, it } from 'vitest';
import { ClusterError, registerFamilies, type ToolFamily } from '../services/core/index.js';
import { families } from './support/families.js';

// Tool families plug in through the kernel's ToolFamily contract: a family the kernel has never
// heard of is resolved, validated and cataloged like the built-in ones.

/** A family with one template, `echo`, on a backend kind of its own. */
const echoFamily: ToolFamily = {
  name: 'echo',
  backends: { 'echo-http': { healthPath: '/ping', endpointConcurrency: 3 } },
  templates: {
    echo: {
      description: 'Echo the text back.',
      backends: ['echo-http'],
      inputSchema: (tool) => ({
        type: 'object',
        properties: { text: { type: 'string', maxLength: tool.maxTextLength } },
        required: ['text'],
      }),
      adapter: (config) => `echo adapter of ${config.namespace}`,
    },
  },
  defaults: {
    pool: 'echoes',
    backend: 'echo-http',
    tools: [{ name: 'echo', template: 'echo', model: 'none', deadline: '5s' }],
  },
};

/** Runs `fn`, expecting a ClusterError INVALID_CONFIG, and returns its message. */
function configError(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(ClusterError);
    expect((err as ClusterError).code).toBe('INVALID_CONFIG');
    return (err as ClusterError).message;
  }
  throw new Error('expected INVALID_CONFIG');
}

describe('registerFamilies', () => {
  it('resolves a new family: its built-in pool and tool, health path, concurrency, schema and adapter', () => {
    const registry = registerFamilies([...families.families, echoFamily]);
    const config = registry.resolveConfig('cluster: { namespace: ns }\n');
    expect(Object.keys(config.pools)).toEqual(['inference', 'embeddings', 'diffusion', 'echoes']);
    expect(config.pools.echoes).toMatchObject({ backend: 'echo-http', healthPath: '/ping' });
    expect(config.pools.echoes?.scaling.replicaConcurrency).toBe(3);
    const echo = config.tools.find((t) => t.name === 'echo');
    expect(echo).toMatchObject({ template: 'echo', pool: 'echoes', deadlineMs: 5000 });
    expect(echo?.description).toBe('Echo the text back.');
    expect(echo?.inputSchema).toMatchObject({ properties: { text: { maxLength: 100_000 } } });
    expect(registry.adapters(config).echo).toBe('echo adapter of ns');
  });

  it('names the new template and backend kind in messages', () => {
    const registry = registerFamilies([...families.families, echoFamily]);
    const wrongKind = configError(() =>
      registry.resolveConfig('tools:\n  - { name: e, template: echo, pool: inference, model: m }\n'),
    );
    expect(wrongKind).toContain('tools.0.template: template "echo" needs a pool with backend echo-http');
    const unknown = configError(() => registry.resolveConfig('pools:\n  p: { backend: grpc }\n'));
    expect(unknown).toMatch(/pools\.p\.backend: .*"echo-http"/);
  });

  it('serves only the families registered', () => {
    const registry = registerFamilies([echoFamily]);
    expect(configError(() => registry.resolveConfig('pools:\n  p: { backend: tei }\n'))).toMatch(
      /pools\.p\.backend: .*"echo-http" \(found "tei"\)/,
    );
    expect(Object.keys(registry.resolveConfig('').pools)).toEqual(['echoes']);
  });

  it('rejects a template two families declare, and a template on an undeclared backend kind', () => {
    expect(() => registerFamilies([echoFamily, { ...echoFamily, name: 'echo2' }])).toThrow(
      /template echo is declared by families echo and echo2/,
    );
    const stray: ToolFamily = {
      name: 'stray',
      backends: {},
      templates: {
        stray: {
          ...(echoFamily.templates.echo as ToolFamily['templates'][string]),
          backends: ['nowhere'],
        },
      },
    };
    expect(() => registerFamilies([stray])).toThrow(
      /template stray \(family stray\) runs on backend kinds no family declares: nowhere/,
    );
  });

  it('closes every family once, even when one fails', async () => {
    const closed: string[] = [];
    const registry = registerFamilies([
      { ...echoFamily, close: async () => void closed.push('echo') },
      {
        name: 'failing',
        backends: {},
        templates: {},
        close: async () => {
          closed.push('failing');
          throw new Error('boom');
        },
      },
    ]);
    await registry.close();
    expect(closed.sort()).toEqual(['echo', 'failing']);
  });
});
