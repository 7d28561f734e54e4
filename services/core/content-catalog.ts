import { z } from 'zod';
import { section } from './settings.js';

// Resources, resource templates and prompts an ingress serves from its own config, answered by
// every replica without a broker round trip (they are static: the same file gives every replica
// the same answers). Text may hold `{{name}}` placeholders: a template's variables or a prompt's
// arguments, substituted as given (no escaping) when the resource is read or the prompt got.

/** `{{name}}` placeholders in text; names as in a URI template variable or a prompt argument. */
const PLACEHOLDER = /\{\{([A-Za-z0-9_.-]+)\}\}/g;
/** One RFC 6570 expression: an optional operator, then variables with `*` or `:n` modifiers. */
const EXPRESSION = /\{([+#./;?&]?)([^{}]*)\}/g;
const VARIABLE = /^[A-Za-z0-9_]([A-Za-z0-9_.]|%[0-9A-Fa-f]{2})*$/;
/** An absolute URI: a scheme, then anything (`test://x`, `file:///a`, `urn:isbn:1`). */
const ABSOLUTE_URI = /^[A-Za-z][A-Za-z0-9+.-]*:\S*$/;
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

/** Placeholder names used in `text`, in order of first use. */
export function placeholdersOf(text: string): string[] {
  return [...new Set([...text.matchAll(PLACEHOLDER)].map((m) => m[1] as string))];
}

/** `text` with each `{{name}}` replaced by `values[name]`; unknown names stay as written. */
export function fillPlaceholders(text: string, values: Readonly<Record<string, string>>): string {
  return text.replace(PLACEHOLDER, (whole, key: string) => values[key] ?? whole);
}

/** The variable names of an RFC 6570 URI template, or why it is not one. */
export function templateVariables(template: string): string[] | string {
  const names: string[] = [];
  const outside = template.replace(EXPRESSION, (_whole, _op: string, list: string) => {
    for (const spec of list.split(',')) {
      const name = spec.replace(/(\*|:\d{1,4})$/, '');
      if (!VARIABLE.test(name)) return '\u0000';
      names.push(name);
    }
    return '';
  });
  if (outside.includes('\u0000')) return 'has an expression whose variable names are not valid (e.g. {id})';
  if (/[{}]/.test(outside)) return 'has an unbalanced "{" or "}"';
  if (names.length === 0) return 'has no variables: list a fixed URI under `resources:` instead';
  if (new Set(names).size !== names.length) return 'names a variable twice';
  return names;
}

const uri = z.string().regex(ABSOLUTE_URI, 'must be an absolute URI with a scheme, e.g. "docs://guide"');
const base64 = z
  .string()
  .min(1)
  .refine((s) => s.length % 4 === 0 && BASE64.test(s), 'must be base64 (standard alphabet, padded)');
const mimeType = z.string().regex(/^[\w.+-]+\/[\w.+-]+/, 'must be a media type, e.g. "text/plain"');
const completions = z.array(z.string()).max(1000);

/** Body of a resource: inline `text` or a base64 `blob`, exactly one. */
const bodyShape = {
  /** UTF-8 text returned as `text`; may hold `{{variable}}` placeholders in a template. */
  text: z.string().optional(),
  /** Binary content, base64-encoded, returned as `blob` as written. */
  blob: base64.optional(),
};
const oneBody = (r: { text?: string | undefined; blob?: string | undefined }, ctx: z.RefinementCtx) => {
  if ((r.text === undefined) === (r.blob === undefined))
    ctx.addIssue({ code: 'custom', message: 'give exactly one of `text` (inline text) or `blob` (base64)' });
};

const resourceSchema = section({
  uri,
  name: z.string().min(1),
  title: z.string().optional(),
  description: z.string().optional(),
  mimeType: mimeType.optional(),
  ...bodyShape,
}).superRefine(oneBody);

const resourceTemplateSchema = section({
  /** RFC 6570 template a read URI is matched against, e.g. `docs://pages/{id}`. */
  uriTemplate: z.string().min(1).max(1000),
  name: z.string().min(1),
  title: z.string().optional(),
  description: z.string().optional(),
  mimeType: mimeType.optional(),
  ...bodyShape,
  /** Values `completion/complete` offers per template variable (prefix-filtered). */
  completions: z.record(z.string(), completions).default({}),
}).superRefine((t, ctx) => {
  oneBody(t, ctx);
  const names = templateVariables(t.uriTemplate);
  if (typeof names === 'string') {
    ctx.addIssue({ code: 'custom', path: ['uriTemplate'], message: names });
    return;
  }
  for (const used of placeholdersOf(t.text ?? ''))
    if (!names.includes(used))
      ctx.addIssue({
        code: 'custom',
        path: ['text'],
        message: `uses {{${used}}}, which is not a variable of the template (${names.join(', ')})`,
      });
  for (const key of Object.keys(t.completions))
    if (!names.includes(key))
      ctx.addIssue({
        code: 'custom',
        path: ['completions', key],
        message: `is not a variable of the template (${names.join(', ')})`,
      });
});

const argumentSchema = section({
  name: z.string().regex(/^[A-Za-z0-9_.-]+$/, 'use letters, digits, "_", "-" and "."'),
  description: z.string().optional(),
  /** A `prompts/get` without it is refused. Default false. */
  required: z.boolean().default(false),
  /** Values `completion/complete` offers for it (prefix-filtered). */
  completions: completions.default([]),
  /**
   * A question that asks for the argument when a 2026-07-28 caller leaves it out: the prompt
   * answers with an elicitation (multi-round-trip input, one form for every such argument left
   * out) instead of refusing, and is rendered once the caller answers. 2025-era callers must pass
   * it as usual. Default: none (a missing required argument is refused).
   */
  ask: z.string().min(1).optional(),
});

/** Prompt message content: the MCP content blocks a prompt may carry. */
const contentSchema = z.discriminatedUnion('type', [
  section({ type: z.literal('text'), text: z.string() }),
  section({ type: z.literal('image'), data: base64, mimeType }),
  section({ type: z.literal('audio'), data: base64, mimeType }),
  section({
    type: z.literal('resource'),
    resource: section({ uri: z.string().min(1), mimeType: mimeType.optional(), ...bodyShape }).superRefine(
      oneBody,
    ),
  }),
]);

const promptSchema = section({
  name: z.string().min(1),
  title: z.string().optional(),
  description: z.string().optional(),
  arguments: z.array(argumentSchema).default([]),
  messages: z.array(section({ role: z.enum(['user', 'assistant']), content: contentSchema })).min(1),
}).superRefine((p, ctx) => {
  const declared = p.arguments.map((a) => a.name);
  if (new Set(declared).size !== declared.length)
    ctx.addIssue({ code: 'custom', path: ['arguments'], message: 'names an argument twice' });
  p.messages.forEach((m, i) => {
    const c = m.content;
    const texts =
      c.type === 'text' ? [c.text] : c.type === 'resource' ? [c.resource.uri, c.resource.text ?? ''] : [];
    for (const used of texts.flatMap(placeholdersOf))
      if (!declared.includes(used))
        ctx.addIssue({
          code: 'custom',
          path: ['messages', i, 'content'],
          message: `uses {{${used}}}, which is not a declared argument (${declared.join(', ') || 'none'})`,
        });
  });
});

/** Entries of a list whose `key` repeats, as issues on the later ones. */
const unique =
  <T>(key: (item: T) => string, what: string) =>
  (items: T[], ctx: z.RefinementCtx) => {
    const seen = new Set<string>();
    items.forEach((item, i) => {
      const k = key(item);
      if (seen.has(k)) ctx.addIssue({ code: 'custom', path: [i], message: `${what} "${k}" is listed twice` });
      seen.add(k);
    });
  };

/** Top-level `resources:`: fixed resources listed by `resources/list` and read by URI. Default none. */
export const resourcesSchema = z
  .array(resourceSchema)
  .superRefine(unique((r) => r.uri, 'uri'))
  .default([]);
/** Top-level `resourceTemplates:`: URIs read by matching a template. Default none. */
export const resourceTemplatesSchema = z
  .array(resourceTemplateSchema)
  .superRefine(unique((t) => t.uriTemplate, 'uriTemplate'))
  .default([]);
/** Top-level `prompts:`: prompts listed by `prompts/list` and rendered by `prompts/get`. Default none. */
export const promptsSchema = z
  .array(promptSchema)
  .superRefine(unique((p) => p.name, 'prompt'))
  .default([]);

export type CatalogResource = z.output<typeof resourceSchema>;
export type CatalogResourceTemplate = z.output<typeof resourceTemplateSchema>;
export type CatalogPrompt = z.output<typeof promptSchema>;
export type CatalogPromptContent = z.output<typeof contentSchema>;

/** What an ingress serves besides tools, as the resolved config holds it. */
export interface ContentCatalog {
  resources: CatalogResource[];
  resourceTemplates: CatalogResourceTemplate[];
  prompts: CatalogPrompt[];
}
