import type { JsonSchema } from './catalog.js';
import {
  type ConfigEnv,
  loadConfig,
  RESOLVED_TOOL_KEYS,
  type ResolvedConfig,
  resolveConfig,
  TOOL_KEYS,
  type ToolSettings,
} from './config.js';
import { ClusterError } from './errors.js';
import { resolvedKeys, type ToolSettingsSpec } from './settings.js';

/** A protocol a pool's backend endpoints speak, e.g. `openai-chat` (vLLM) or `comfyui`. */
export interface BackendKindSpec {
  /** Path the worker's health probe requests on each endpoint, e.g. `/health` (answer 2xx when up). */
  healthPath: string;
  /**
   * Calls one endpoint takes at once when `maxConcurrency` is not set, and a replica's default
   * `scaling.replicaConcurrency`: what one GPU server of this kind serves concurrently.
   */
  endpointConcurrency: number;
}

/** One tool template: the arguments a tool of it takes, what it returns, and what runs it. */
export interface TemplateSpec<Adapter = unknown> {
  /** Description of a tool that gives none (`tools/list`). */
  description: string;
  /** Backend kinds a pool must speak to serve a tool of this template (any of them). */
  backends: readonly string[];
  /**
   * The argument schema of `tool` (limits such as `maxTextLength` come from its family's
   * settings, read with `ToolFamily.settings.of(tool)`).
   */
  inputSchema(tool: ToolSettings): JsonSchema;
  /** The schema of `structuredContent`; absent for templates whose result is content only. */
  outputSchema?(tool: ToolSettings): JsonSchema;
  /** The adapter a worker of `config` runs calls of this template with. */
  adapter(config: ResolvedConfig): Adapter;
}

/** A tool of the built-in configuration (used when the file declares no `tools`). */
export interface DefaultTool {
  name: string;
  template: string;
  model: string;
  /** Duration, e.g. `120s`. */
  deadline: string;
}

/**
 * A tool family: the templates a kind of GPU work offers (inference: generate_text, chat,
 * summarize), the backend kinds they run on, and the adapters that run them. Each family is
 * declared once, in its own folder under `workers/`, and registered by the composition root;
 * the kernel knows families only through this contract. `Adapter` is the pool runtime's adapter
 * type: the kernel never runs one, so it does not fix it.
 */
export interface ToolFamily<Adapter = unknown> {
  /** Name in messages, e.g. `embeddings`. */
  name: string;
  /** Backend kinds this family's templates run on, by name. */
  backends: Readonly<Record<string, BackendKindSpec>>;
  /** Templates by name; a name is unique across registered families. */
  templates: Readonly<Record<string, TemplateSpec<Adapter>>>;
  /**
   * The settings a tool of any of this family's templates takes besides what every tool has
   * (name, template, description, pool, model, deadline, inputSchema, outputSchema), with their
   * defaults and units: declared with `toolSettings({...})`, written flat on the tool entry in the
   * file, validated against this family only, and read typed with `settings.of(tool)`. Absent: a
   * tool of this family takes no other key. See ToolSettingsSpec for why it is per family.
   */
  settings?: ToolSettingsSpec;
  /**
   * The pool (and its tools) the built-in configuration declares for this family. With `optIn`,
   * the pool is left out of the built-in pools: a file switches it on by declaring the pool (its
   * tools then come with it unless the file lists `tools`) or with `<pool>: { enabled: true }`.
   */
  defaults?: { pool: string; backend: string; tools: readonly DefaultTool[]; optIn?: boolean };
  /**
   * Releases what the family's adapters hold for the whole process (e.g. result caches). Called
   * once by the composition root after every worker of the process stopped.
   */
  close?(): Promise<void>;
}

/** The registered families: what configuration, catalog and workers look templates and backends up in. */
export interface ToolFamilies<Adapter = unknown> {
  readonly families: readonly ToolFamily<Adapter>[];
  /** Template names, in registration order. */
  readonly templates: readonly string[];
  /** Backend kind names, in registration order. */
  readonly backendKinds: readonly string[];
  template(name: string): TemplateSpec<Adapter> | undefined;
  /** The family declaring template `name`. */
  family(template: string): ToolFamily<Adapter> | undefined;
  backend(kind: string): BackendKindSpec | undefined;
  /** Pools of the built-in configuration: pool name → backend kind. */
  readonly defaultPools: Readonly<Record<string, string>>;
  /** Tools of the built-in configuration, with their pool (opt-in pools' tools included). */
  readonly defaultTools: readonly (DefaultTool & { pool: string })[];
  /** Opt-in pools (`defaults.optIn`): pool name → backend kind; not among `defaultPools`. */
  readonly optInPools: Readonly<Record<string, string>>;
  /** `resolveConfig` of the kernel against these families (see config.ts). */
  resolveConfig(source: string, env?: ConfigEnv, origin?: string): ResolvedConfig;
  /** `loadConfig` of the kernel against these families. */
  loadConfig(path: string | undefined, env?: ConfigEnv): ResolvedConfig;
  /** The adapter of every template for a worker of `config`, by template name. */
  adapters(config: ResolvedConfig): Record<string, Adapter>;
  /** Closes every family (`ToolFamily.close`); failures are ignored so each gets its turn. */
  close(): Promise<void>;
}

/**
 * Registers tool families. Throws INVALID_CONFIG when two families declare one template, when
 * they declare one backend kind differently, when a template runs on an undeclared kind, or
 * when a family's setting takes the name of a key every tool has.
 */
export function registerFamilies<Adapter>(families: readonly ToolFamily<Adapter>[]): ToolFamilies<Adapter> {
  const templates = new Map<string, TemplateSpec<Adapter>>();
  const backends = new Map<string, BackendKindSpec>();
  const owner = new Map<string, string>();
  const familyOf = new Map<string, ToolFamily<Adapter>>();
  const defaultPools: Record<string, string> = {};
  const optInPools: Record<string, string> = {};
  const defaultTools: (DefaultTool & { pool: string })[] = [];
  for (const family of families) {
    for (const [kind, spec] of Object.entries(family.backends)) {
      const known = backends.get(kind);
      if (
        known &&
        (known.healthPath !== spec.healthPath || known.endpointConcurrency !== spec.endpointConcurrency)
      ) {
        throw new ClusterError(
          'INVALID_CONFIG',
          `backend kind ${kind} is declared differently by families ${owner.get(`backend ${kind}`)} and ${family.name}`,
        );
      }
      backends.set(kind, spec);
      owner.set(`backend ${kind}`, family.name);
    }
    for (const [name, spec] of Object.entries(family.templates)) {
      if (templates.has(name)) {
        throw new ClusterError(
          'INVALID_CONFIG',
          `template ${name} is declared by families ${owner.get(`template ${name}`)} and ${family.name}`,
        );
      }
      templates.set(name, spec);
      owner.set(`template ${name}`, family.name);
      familyOf.set(name, family);
    }
    const settings = family.settings ? [...resolvedKeys(family.settings.shape)] : [];
    for (const [key, resolved] of settings) {
      if (TOOL_KEYS.includes(key) || RESOLVED_TOOL_KEYS.includes(resolved)) {
        throw new ClusterError(
          'INVALID_CONFIG',
          `family ${family.name} declares setting ${key}, but every tool has ${TOOL_KEYS.includes(key) ? key : resolved}`,
        );
      }
    }
    if (family.defaults) {
      (family.defaults.optIn ? optInPools : defaultPools)[family.defaults.pool] = family.defaults.backend;
      for (const tool of family.defaults.tools) defaultTools.push({ ...tool, pool: family.defaults.pool });
    }
  }
  for (const [name, spec] of templates) {
    const unknown = spec.backends.filter((kind) => !backends.has(kind));
    if (unknown.length > 0 || spec.backends.length === 0) {
      throw new ClusterError(
        'INVALID_CONFIG',
        `template ${name} (family ${owner.get(`template ${name}`)}) runs on backend kinds no family declares: ${unknown.join(', ') || 'none given'}`,
      );
    }
  }

  const registry: ToolFamilies<Adapter> = {
    families,
    templates: [...templates.keys()],
    backendKinds: [...backends.keys()],
    template: (name) => templates.get(name),
    family: (template) => familyOf.get(template),
    backend: (kind) => backends.get(kind),
    defaultPools,
    defaultTools,
    optInPools,
    resolveConfig: (source, env, origin) => resolveConfig(registry, source, env, origin),
    loadConfig: (path, env) => loadConfig(registry, path, env),
    adapters: (config) =>
      Object.fromEntries([...templates].map(([name, spec]) => [name, spec.adapter(config)])),
    async close() {
      await Promise.allSettled(families.map((family) => family.close?.()));
    },
  };
  return registry;
}
