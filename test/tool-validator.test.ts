import { describe, expect, it } from 'vitest';
import { buildCatalog } from '../services/core/index.js';
import { ToolValidator } from '../services/ingress/index.js';
import { resolveConfig } from './support/families.js';

const validator = new ToolValidator(buildCatalog(resolveConfig('').tools));

describe('ToolValidator: generate_text', () => {
  it('accepts valid arguments and fills in the defaults, in place', () => {
    const args: Record<string, unknown> = { prompt: 'Write a haiku' };
    expect(validator.check('generate_text', args)).toBeUndefined();
    expect(args).toEqual({ prompt: 'Write a haiku', max_tokens: 256, temperature: 0.7 });
  });

  it('keeps values the caller gave', () => {
    const args: Record<string, unknown> = {
      prompt: 'p',
      max_tokens: 4096,
      temperature: 0,
      system: 'be brief',
    };
    expect(validator.check('generate_text', args)).toBeUndefined();
    expect(args).toEqual({ prompt: 'p', max_tokens: 4096, temperature: 0, system: 'be brief' });
  });

  it('accepts unicode prompts', () => {
    expect(validator.check('generate_text', { prompt: 'Grüße 世界 👋' })).toBeUndefined();
  });

  it('names a missing prompt', () => {
    const message = validator.check('generate_text', {});
    expect(message).toContain('invalid arguments for generate_text');
    expect(message).toContain('missing required property "prompt"');
  });

  it.each([
    [{ prompt: 42 }, 'arguments.prompt', 'string'],
    [{ prompt: '' }, 'arguments.prompt', 'fewer than 1'],
    [{ prompt: 'p', max_tokens: 'many' }, 'arguments.max_tokens', 'integer'],
    [{ prompt: 'p', max_tokens: 1.5 }, 'arguments.max_tokens', 'integer'],
    [{ prompt: 'p', max_tokens: 0 }, 'arguments.max_tokens', '>= 1'],
    [{ prompt: 'p', temperature: 'hot' }, 'arguments.temperature', 'number'],
    [{ prompt: 'p', temperature: 2.5 }, 'arguments.temperature', '<= 2'],
    [{ prompt: 'p', temperature: -0.1 }, 'arguments.temperature', '>= 0'],
    [{ prompt: 'p', system: ['a'] }, 'arguments.system', 'string'],
  ])('rejects %j naming %s', (args, where, what) => {
    const message = validator.check('generate_text', args as Record<string, unknown>);
    expect(message).toContain(where);
    expect(message).toContain(what);
  });

  it('rejects max_tokens above the tool’s limit', () => {
    expect(validator.check('generate_text', { prompt: 'p', max_tokens: 4096 })).toBeUndefined();
    const message = validator.check('generate_text', { prompt: 'p', max_tokens: 4097 });
    expect(message).toContain('arguments.max_tokens');
    expect(message).toContain('<= 4096');
  });

  it('applies the limit the configuration sets', () => {
    const config = resolveConfig(
      [
        'tools:',
        '  - { name: small, template: generate_text, pool: inference, model: m, maxTokens: 100 }',
        '  - { name: few, template: embed, pool: embeddings, model: e, maxTexts: 2 }',
      ].join('\n'),
    );
    const custom = new ToolValidator(buildCatalog(config.tools));
    expect(custom.check('small', { prompt: 'p', max_tokens: 100 })).toBeUndefined();
    expect(custom.check('small', { prompt: 'p', max_tokens: 101 })).toContain(
      'arguments.max_tokens must be <= 100',
    );
    expect(custom.check('few', { texts: ['a', 'b'] })).toBeUndefined();
    expect(custom.check('few', { texts: ['a', 'b', 'c'] })).toContain('arguments.texts');
    expect(custom.check('generate_text', { prompt: 'p' })).toBe('no schema for tool generate_text');
  });

  it('rejects an unknown property by name', () => {
    const message = validator.check('generate_text', { prompt: 'p', top_k: 5 });
    expect(message).toContain('unknown property "top_k"');
  });

  it('lists every problem at once', () => {
    const message = validator.check('generate_text', { max_tokens: 'x', colour: 'red' }) ?? '';
    expect(message).toContain('"prompt"');
    expect(message).toContain('arguments.max_tokens');
    expect(message).toContain('"colour"');
  });
});

describe('ToolValidator: embed', () => {
  it('accepts texts and fills in normalize', () => {
    const args: Record<string, unknown> = { texts: ['one', 'two'] };
    expect(validator.check('embed', args)).toBeUndefined();
    expect(args).toEqual({ texts: ['one', 'two'], normalize: true });
  });

  it('accepts exactly the most texts allowed', () => {
    expect(
      validator.check('embed', { texts: Array.from({ length: 256 }, (_, i) => `t${i}`) }),
    ).toBeUndefined();
  });

  it('names texts when there are none', () => {
    const message = validator.check('embed', { texts: [] });
    expect(message).toContain('arguments.texts');
    expect(message).toContain('fewer than 1');
  });

  it('names texts when there are too many', () => {
    const message = validator.check('embed', { texts: Array.from({ length: 257 }, (_, i) => `t${i}`) });
    expect(message).toContain('arguments.texts');
    expect(message).toContain('more than 256');
  });

  it('names the item that is not a string', () => {
    const message = validator.check('embed', { texts: ['ok', 7, 'fine'] });
    expect(message).toContain('arguments.texts.1');
    expect(message).toContain('string');
    expect(message).not.toContain('arguments.texts.0');
  });

  it('names an empty text', () => {
    expect(validator.check('embed', { texts: ['ok', ''] })).toContain('arguments.texts.1');
  });

  it('names texts given as a string instead of a list', () => {
    expect(validator.check('embed', { texts: 'just one' })).toContain('arguments.texts must be array');
  });

  it('names a missing texts', () => {
    expect(validator.check('embed', { model: 'm' })).toContain('missing required property "texts"');
  });

  it('names a wrong normalize and an unknown property', () => {
    const message = validator.check('embed', { texts: ['a'], normalize: 'yes', dims: 3 });
    expect(message).toContain('arguments.normalize');
    expect(message).toContain('unknown property "dims"');
  });
});

describe('ToolValidator: unknown tools', () => {
  it('says there is no schema', () => {
    expect(validator.check('nope', {})).toBe('no schema for tool nope');
  });
});

describe('ToolValidator: schemas declaring JSON Schema 2020-12', () => {
  // `prefixItems` is a 2020-12 keyword (draft-07 ignores it): checking it shows the dialect used.
  const schema2020 = {
    $schema: 'https://json-schema.org/draft/2020-12/schema',
    type: 'object',
    $defs: { id: { type: 'integer', minimum: 1 } },
    properties: {
      pair: { type: 'array', prefixItems: [{ type: 'string' }, { $ref: '#/$defs/id' }], items: false },
    },
    required: ['pair'],
    additionalProperties: false,
  };
  const yamlTools = [
    'pools: { inference: { backend: openai-chat } }',
    'tools:',
    '  - name: paired',
    '    template: generate_text',
    '    pool: inference',
    '    model: m',
    `    inputSchema: ${JSON.stringify(schema2020)}`,
    '  - { name: plain, template: generate_text, pool: inference, model: m }',
  ].join('\n');

  it('a configured 2020-12 input schema is accepted and checked in its dialect', () => {
    const v = new ToolValidator(buildCatalog(resolveConfig(yamlTools).tools));
    expect(v.check('paired', { pair: ['a', 2] })).toBeUndefined();
    expect(v.check('paired', { pair: ['a', 'b'] })).toContain('arguments.pair.1 must be integer');
    expect(v.check('paired', { pair: ['a', 0] })).toContain('arguments.pair.1 must be >= 1');
    expect(v.check('paired', { pair: ['a', 2, 3] })).toContain('arguments.pair');
    // The draft-07 tools beside it are checked as before.
    expect(v.check('plain', {})).toContain('missing required property "prompt"');
  });

  it('a 2020-12 schema the meta-schema refuses is a config error naming the tool', () => {
    const bad = yamlTools.replace('"minimum":1', '"minimum":"one"');
    expect(() => resolveConfig(bad)).toThrow(/tools\.0\.inputSchema.*not a valid JSON Schema/s);
  });
});
