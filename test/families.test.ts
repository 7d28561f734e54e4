import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import {
  ClusterError,
  duration,
  registerFamilies,
  section,
  type ToolFamily,
  toolSettings,
} from '../services/core/index.js';
import { families } from './support/families.js';

// Tool families plug in through the kernel's ToolFamily contract: a family the kernel has never
// heard of is resolved, validated and cataloged like the built-in ones.

/** Settings of an echo tool, none of which the kernel or the built-in families declare. */
const echoSettings = toolSettings({
  /** Longest text in characters. */
  maxTextLength: z.number().int().min(1).default(100_000),
  /** Times the text comes back. */
  repeat: z.number().int().min(1).max(10).default(1),
  /** Pause between repeats; resolved as `pauseMs`. */
  pause: duration('0ms'),
  /** How the echo sounds. */
  voice: section({ pitch: z.enum(['low', 'high']).default('low'), fade: duration('1s') }).prefault({}),
});

/** A family with one template, `echo`, on a backend kind of its own. */
const echoFamily: ToolFamily = {
  name: 'echo',
  backends: { 'echo-http': { healthPath: '/ping', endpointConcurrency: 3 } },
  settings: echoSettings,
  templates: {
    echo: {
      description: 'Echo the text back.',
      backends: ['echo-http'],
      inputSchema: (tool) => ({
        type: 'object',
        properties: {
          text: { type: 'string', maxLength: echoSettings.of(tool).maxTextLength },
          times: { type: 'integer', maximum: echoSettings.of(tool).repeat },
        },
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

  it("validates and resolves a new family's own settings, with their defaults and units", () => {
    const registry = registerFamilies([...families.families, echoFamily]);
    const defaults = registry.resolveConfig('').tools.find((t) => t.name === 'echo');
    expect(defaults && echoSettings.of(defaults)).toMatchObject({
      maxTextLength: 100_000,
      repeat: 1,
      pauseMs: 0,
      voice: { pitch: 'low', fadeMs: 1000 },
    });
    const config = registry.resolveConfig(
      [
        'pools: { echoes: { backend: echo-http } }',
        'tools:',
        '  - name: loud',
        '    template: echo',
        '    pool: echoes',
        '    model: m',
        '    repeat: 3',
        '    pause: 250ms',
        '    voice: { pitch: high }',
        '',
      ].join('\n'),
    );
    const loud = config.tools[0];
    if (!loud) throw new Error('no tool');
    // Flat on the resolved tool, as in the file, and typed through the family's accessor.
    expect(loud).toMatchObject({ name: 'loud', repeat: 3, pauseMs: 250 });
    const settings = echoSettings.of(loud);
    expect(settings.voice).toEqual({ pitch: 'high', fadeMs: 1000 });
    expect(settings.pauseMs + settings.repeat).toBe(253);
    // The template's schema sees the settings.
    expect(loud.inputSchema).toMatchObject({ properties: { times: { maximum: 3 } } });
    // Another family's accessor refuses a tool it did not resolve.
    const embed = config.tools.find((t) => t.template === 'embed');
    expect(embed).toBeUndefined();
    const builtIn = registry.resolveConfig('').tools.find((t) => t.template === 'embed');
    expect(() => builtIn && echoSettings.of(builtIn)).toThrow(
      /tool embed \(template embed\) has no setting repeat/,
    );
  });

  it('names the path of a misspelt or wrong setting of a new family, and what a tool of it takes', () => {
    const registry = registerFamilies([...families.families, echoFamily]);
    const tool = (line: string) =>
      registry.resolveConfig(
        `pools: { echoes: { backend: echo-http } }\ntools:\n  - { name: e, template: echo, pool: echoes, model: m, ${line} }\n`,
      );
    const misspelt = configError(() => tool('repaet: 3'));
    expect(misspelt).toMatch(
      /tools\.0: Unrecognized key: "repaet"; a tool of template echo takes name, template,/,
    );
    expect(misspelt).toContain('the settings of family echo: maxTextLength, repeat, pause, voice');
    expect(configError(() => tool('voice: { pich: high }'))).toMatch(/tools\.0\.voice: .*"pich"/);
    expect(configError(() => tool('repeat: 11'))).toMatch(/tools\.0\.repeat: .*\(found 11\)/);
    expect(configError(() => tool('pause: soon'))).toMatch(
      /tools\.0\.pause: "soon" is not a duration; .*\(found "soon"\)/,
    );
    // A setting of another family's template is named with its family.
    expect(configError(() => tool('maxTexts: 5'))).toMatch(
      /tools\.0: Unrecognized key: "maxTexts" \(a setting of family embeddings \(template embed\)\); a tool of template echo takes/,
    );
    const embedWithRepeat = configError(() =>
      registry.resolveConfig(
        'tools:\n  - { name: e, template: embed, pool: embeddings, model: m, repeat: 2 }\n',
      ),
    );
    expect(embedWithRepeat).toMatch(
      /tools\.0: Unrecognized key: "repeat" \(a setting of family echo \(template echo\)\); a tool of template embed takes .*maxTexts, maxTextLength, batch, cache/,
    );
  });

  it('rejects a family setting named like a key every tool has', () => {
    const clash = (settings: ToolFamily['settings']) => () => registerFamilies([{ ...echoFamily, settings }]);
    expect(clash(toolSettings({ model: z.string().default('x') }))).toThrow(
      /family echo declares setting model, but every tool has model/,
    );
    expect(clash(toolSettings({ deadlineMs: z.number().default(1) }))).toThrow(
      /family echo declares setting deadlineMs, but every tool has deadlineMs/,
    );
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
