import {
  ProtocolError,
  ProtocolErrorCode,
  ResourceNotFoundError,
  type Server,
  type ServerContext,
  UriTemplate,
} from '@modelcontextprotocol/server';
import { z } from 'zod';
import {
  type CatalogPrompt,
  type CatalogPromptContent,
  type CatalogResourceTemplate,
  type ContentCatalog,
  fillPlaceholders,
} from '../core/index.js';
import type { ResourceSource } from './file-resources.js';

/** Most values one `completion/complete` answer carries (the MCP limit). */
const MAX_COMPLETIONS = 100;

/** The capabilities the catalog adds to `initialize` / `server/discover`; none when it is empty. */
export interface CatalogCapabilities {
  resources?: { subscribe: boolean; listChanged: boolean };
  prompts?: { listChanged: boolean };
  completions?: Record<string, never>;
}

/**
 * Serves resources, resource templates, prompts and completions from the config on the SDK's
 * per-request server (both protocol eras). Everything is static for the life of the process:
 * lists never change (`listChanged: false`) and a subscribed resource never sends an update.
 */
export interface CatalogServing {
  readonly capabilities: CatalogCapabilities;
  /** Sets the request handlers the capabilities promise on `server`. */
  register(server: Server): void;
}

const invalid = (message: string) => new ProtocolError(ProtocolErrorCode.InvalidParams, message);

// Params schemas handed to the SDK: with them it answers malformed params with Invalid params
// naming the field (its built-in validation of a spec method answers Internal error instead).
const uriParams = { params: z.object({ uri: z.string() }) };
const promptParams = {
  params: z.object({ name: z.string(), arguments: z.record(z.string(), z.string()).optional() }),
};
const completeParams = {
  params: z.object({
    ref: z.union([
      z.object({ type: z.literal('ref/prompt'), name: z.string() }),
      z.object({ type: z.literal('ref/resource'), uri: z.string() }),
    ]),
    argument: z.object({ name: z.string(), value: z.string() }),
  }),
};

export function createCatalogServing(
  catalog: ContentCatalog,
  sources: readonly ResourceSource[] = [],
): CatalogServing {
  const { resources, resourceTemplates, prompts } = catalog;
  const sourceOf = (uri: string) => sources.find((s) => s.owns(uri));
  const byUri = new Map(resources.map((r) => [r.uri, r]));
  const templates = resourceTemplates.map((t) => ({ entry: t, matcher: new UriTemplate(t.uriTemplate) }));
  const promptsByName = new Map(prompts.map((p) => [p.name, p]));
  const hasResources = resources.length > 0 || templates.length > 0 || sources.length > 0;
  const capabilities: CatalogCapabilities = {
    ...(hasResources ? { resources: { subscribe: true, listChanged: false } } : {}),
    ...(prompts.length > 0 ? { prompts: { listChanged: false } } : {}),
    ...(prompts.some((p) => p.arguments.length > 0) || templates.length > 0 ? { completions: {} } : {}),
  };

  const notFound = (uri: string) =>
    new ResourceNotFoundError(
      uri,
      `no resource "${uri}": resources/list and resources/templates/list name what this server serves`,
    );

  /** The template matching `uri` and its variables, or undefined. */
  const matchTemplate = (uri: string) => {
    for (const { entry, matcher } of templates) {
      let vars: ReturnType<UriTemplate['match']>;
      try {
        vars = matcher.match(uri);
      } catch {
        // Longer than the SDK matches (a hostile URI): no template serves it.
        return undefined;
      }
      if (vars)
        return {
          entry,
          values: Object.fromEntries(
            Object.entries(vars).map(([k, v]) => [k, Array.isArray(v) ? v.join(',') : v]),
          ),
        };
    }
    return undefined;
  };

  const read = (uri: string) => {
    const fixed = byUri.get(uri);
    if (fixed) return { uri, ...typeOf(fixed.mimeType), ...bodyOf(fixed, {}) };
    const matched = matchTemplate(uri);
    if (!matched) throw notFound(uri);
    return { uri, ...typeOf(matched.entry.mimeType), ...bodyOf(matched.entry, matched.values) };
  };

  const render = (name: string, given: Record<string, string>, ctx?: ServerContext) => {
    const prompt = promptsByName.get(name);
    if (!prompt)
      throw invalid(
        `unknown prompt "${name}"; prompts/list names the prompts this server serves (${[...promptsByName.keys()].join(', ')})`,
      );
    const declared = prompt.arguments.map((a) => a.name);
    const extra = Object.keys(given).filter((k) => !declared.includes(k));
    if (extra.length > 0)
      throw invalid(
        `prompt "${name}" takes no argument ${extra.map((k) => `"${k}"`).join(', ')}; its arguments: ${declared.join(', ') || 'none'}`,
      );
    // Arguments the caller answered in an elicitation of an earlier round fill in what it left out.
    const args = { ...answeredArguments(ctx), ...given };
    const unasked = prompt.arguments.filter((a) => a.required && args[a.name] === undefined);
    const askable = unasked.filter((a) => a.ask !== undefined);
    if (askable.length > 0 && canElicit(ctx)) return askFor(askable);
    const missing = unasked.map((a) => a.name);
    if (missing.length > 0)
      throw invalid(`prompt "${name}" needs argument ${missing.map((k) => `"${k}"`).join(', ')}`);
    // An optional argument left out reads as empty text.
    const values = Object.fromEntries(prompt.arguments.map((a) => [a.name, args[a.name] ?? '']));
    return {
      ...(prompt.description !== undefined ? { description: prompt.description } : {}),
      messages: prompt.messages.map((m) => ({ role: m.role, content: contentOf(m.content, values) })),
    };
  };

  const complete = (ref: { type: string; name?: string; uri?: string }, argName: string, value: string) => {
    let offered: readonly string[];
    if (ref.type === 'ref/prompt') {
      const prompt = promptsByName.get(ref.name ?? '');
      if (!prompt) throw invalid(`unknown prompt "${ref.name}" in completion ref; see prompts/list`);
      const arg = prompt.arguments.find((a) => a.name === argName);
      if (!arg) throw invalid(argumentProblem(prompt, argName));
      offered = arg.completions;
    } else if (ref.type === 'ref/resource') {
      const found = templates.find((t) => t.entry.uriTemplate === ref.uri);
      if (!found)
        throw invalid(`no resource template "${ref.uri}" in completion ref; see resources/templates/list`);
      if (!found.matcher.variableNames.includes(argName))
        throw invalid(templateVariableProblem(found.entry, found.matcher, argName));
      offered = found.entry.completions[argName] ?? [];
    } else throw invalid(`completion ref type "${ref.type}" is neither "ref/prompt" nor "ref/resource"`);
    const values = offered.filter((v) => v.startsWith(value));
    return {
      completion: {
        values: values.slice(0, MAX_COMPLETIONS),
        total: values.length,
        hasMore: values.length > MAX_COMPLETIONS,
      },
    };
  };

  /** Subscribing to a URI that exists succeeds; the content never changes, so no update follows. */
  const known = (uri: string) => {
    if (!byUri.has(uri) && !matchTemplate(uri) && !sourceOf(uri)) throw notFound(uri);
    return {};
  };

  return {
    capabilities,
    register(server) {
      if (capabilities.resources) {
        const listing = {
          resources: resources.map((r) => ({
            uri: r.uri,
            name: r.name,
            ...optional(r, ['title', 'description', 'mimeType']),
          })),
        };
        const templateListing = {
          resourceTemplates: [
            ...resourceTemplates.map((t) => ({
              uriTemplate: t.uriTemplate,
              name: t.name,
              ...optional(t, ['title', 'description', 'mimeType']),
            })),
            ...sources.map((source) => source.template),
          ],
        };
        server.setRequestHandler('resources/list', () => listing as never);
        server.setRequestHandler('resources/templates/list', () => templateListing as never);
        server.setRequestHandler('resources/read', uriParams, async (p, ctx) => {
          const source = sourceOf(p.uri);
          return { contents: [source ? await source.read(p.uri, ctx) : read(p.uri)] } as never;
        });
        server.setRequestHandler('resources/subscribe', uriParams, (p) => known(p.uri) as never);
        server.setRequestHandler('resources/unsubscribe', uriParams, (p) => known(p.uri) as never);
      }
      if (capabilities.prompts) {
        const listing = {
          prompts: prompts.map((p) => ({
            name: p.name,
            ...optional(p, ['title', 'description']),
            arguments: p.arguments.map((a) => ({
              name: a.name,
              ...optional(a, ['description']),
              required: a.required,
            })),
          })),
        };
        server.setRequestHandler('prompts/list', () => listing as never);
        server.setRequestHandler(
          'prompts/get',
          promptParams,
          (p, ctx) => render(p.name, p.arguments ?? {}, ctx) as never,
        );
      }
      if (capabilities.completions) {
        server.setRequestHandler(
          'completion/complete',
          completeParams,
          (p) => complete(p.ref, p.argument.name, p.argument.value) as never,
        );
      }
    },
  };
}

/** Key of the elicitation a prompt asks its left-out arguments with (multi-round-trip input). */
const ARGUMENTS_INPUT_KEY = 'prompt_arguments';

/** An `InputRequiredResult` asking for `args` in one form (each a string field, all required). */
function askFor(args: { name: string; ask?: string | undefined }[]) {
  return {
    resultType: 'input_required',
    inputRequests: {
      [ARGUMENTS_INPUT_KEY]: {
        method: 'elicitation/create',
        params: {
          message: args.map((a) => a.ask).join('\n'),
          requestedSchema: {
            type: 'object',
            properties: Object.fromEntries(args.map((a) => [a.name, { type: 'string', description: a.ask }])),
            required: args.map((a) => a.name),
          },
        },
      },
    },
  };
}

/**
 * Whether the request may be answered with an elicitation: a 2026-07-28 request (its envelope
 * set) whose caller declared `elicitation`. A 2025-era request has no stream a prompt can ask on.
 */
function canElicit(ctx: ServerContext | undefined): boolean {
  const envelope = ctx?.mcpReq.envelope as Record<string, unknown> | undefined;
  if (!envelope) return false;
  const capabilities = envelope['io.modelcontextprotocol/clientCapabilities'];
  return (
    typeof capabilities === 'object' &&
    capabilities !== null &&
    typeof (capabilities as Record<string, unknown>).elicitation === 'object'
  );
}

/** The arguments an accepted answer to `askFor` holds (strings; numbers and booleans as text). */
function answeredArguments(ctx: ServerContext | undefined): Record<string, string> {
  const answer = ctx?.mcpReq.inputResponses?.[ARGUMENTS_INPUT_KEY] as Record<string, unknown> | undefined;
  if (typeof answer !== 'object' || answer === null || answer.action !== 'accept') return {};
  const content = answer.content;
  if (typeof content !== 'object' || content === null) return {};
  const values: Record<string, string> = {};
  for (const [name, value] of Object.entries(content))
    if (typeof value === 'string' || typeof value === 'number' || typeof value === 'boolean')
      values[name] = String(value);
  return values;
}

function argumentProblem(prompt: CatalogPrompt, argName: string): string {
  const names = prompt.arguments.map((a) => a.name);
  return `prompt "${prompt.name}" has no argument "${argName}"; its arguments: ${names.join(', ') || 'none'}`;
}

function templateVariableProblem(t: CatalogResourceTemplate, matcher: UriTemplate, name: string): string {
  return `resource template "${t.uriTemplate}" has no variable "${name}"; its variables: ${matcher.variableNames.join(', ')}`;
}

function typeOf(mimeType: string | undefined): { mimeType?: string } {
  return mimeType !== undefined ? { mimeType } : {};
}

function bodyOf(
  entry: { text?: string | undefined; blob?: string | undefined },
  values: Record<string, string>,
): { text: string } | { blob: string } {
  return entry.blob !== undefined
    ? { blob: entry.blob }
    : { text: fillPlaceholders(entry.text ?? '', values) };
}

function contentOf(content: CatalogPromptContent, values: Record<string, string>): unknown {
  switch (content.type) {
    case 'text':
      return { type: 'text', text: fillPlaceholders(content.text, values) };
    case 'image':
    case 'audio':
      return { type: content.type, data: content.data, mimeType: content.mimeType };
    case 'resource': {
      const r = content.resource;
      return {
        type: 'resource',
        resource: { uri: fillPlaceholders(r.uri, values), ...typeOf(r.mimeType), ...bodyOf(r, values) },
      };
    }
  }
}

/** The keys of `from` among `keys` whose value is set. */
function optional<T extends object, K extends keyof T>(from: T, keys: K[]): Partial<Pick<T, K>> {
  return Object.fromEntries(keys.filter((k) => from[k] !== undefined).map((k) => [k, from[k]])) as Partial<
    Pick<T, K>
  >;
}
