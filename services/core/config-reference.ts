import type { z } from 'zod';
import { type ConfigFamilies, configSchema, ENV_OVERRIDES } from './config.js';
import { resolvedKeys, type SettingsShape } from './settings.js';

/** One setting of the configuration file, as the generated reference lists it. */
export interface SettingRow {
  /** Path in the file: `ingress.port`, `pools.<name>.backend`, `tools[].name`. */
  path: string;
  /** Its type as written in the file: `string`, `integer 0-65535`, `"a" | "b"`, `duration`, `size`, ... */
  type: string;
  /** Its default as the file would write it; empty when it has none (required or optional). */
  default: string;
  /** The unit the resolved configuration reads it in (`ms`, `bytes`), or empty. */
  unit: string;
  /** Environment variables that override it. */
  env: string[];
}

type AnySchema = z.ZodType & { _zod: { def: Record<string, unknown> & { type: string } } };

const envByPath = new Map(
  Object.entries(ENV_OVERRIDES).map(([variable, path]) => [path.join('.'), variable]),
);

/**
 * Every setting of the configuration file with `families` registered, walked from the zod schema
 * the file is validated with, so the reference cannot drift from what the code accepts: leaves in
 * file order, with type, default, unit and environment override.
 */
export function configReference(families: ConfigFamilies): SettingRow[] {
  const rows: SettingRow[] = [];
  walk(configSchema(families) as unknown as AnySchema, [], undefined, rows);
  for (const row of rows) {
    const variable = envByPath.get(row.path);
    if (variable) row.env.push(variable);
    if (/^pools\.<name>\.endpoints$/.test(row.path)) row.env.push('MCP_CLUSTER_BACKENDS_<POOL>');
  }
  return rows;
}

function walk(
  schema: AnySchema,
  path: string[],
  fallback: unknown,
  rows: SettingRow[],
  unit = '',
): undefined {
  const def = schema._zod.def;
  switch (def.type) {
    case 'pipe': {
      // A section (object → transform) or a setting with a unit (default(union) → transform).
      const inner = def.in as AnySchema;
      if (inner._zod.def.type === 'object' || isWrappedObject(inner))
        return walk(inner, path, fallback, rows, unit);
      return leaf(inner, path, fallback, rows, unit);
    }
    case 'prefault':
    case 'default':
    case 'optional':
    case 'nullable': {
      const value = def.type === 'default' || def.type === 'prefault' ? def.defaultValue : fallback;
      return walk(def.innerType as AnySchema, path, value, rows, unit);
    }
    case 'object': {
      const shape = def.shape as SettingsShape;
      const renamed = resolvedKeys(shape);
      for (const [key, child] of Object.entries(shape)) {
        const to = renamed.get(key) ?? key;
        const childUnit = to === key ? '' : to.endsWith('Ms') ? 'ms' : to.endsWith('Bytes') ? 'bytes' : '';
        const value = isObject(fallback) ? fallback[key] : undefined;
        walk(child as unknown as AnySchema, [...path, key], value, rows, childUnit);
      }
      return;
    }
    case 'record':
      return walk(def.valueType as AnySchema, [...path, '<name>'], undefined, rows);
    case 'array': {
      const element = def.element as AnySchema;
      if (isWrappedObject(element) || element._zod.def.type === 'object')
        return walk(element, [...path.slice(0, -1), `${path[path.length - 1] ?? ''}[]`], undefined, rows);
      return leaf(schema, path, fallback, rows, unit);
    }
    default:
      return leaf(schema, path, fallback, rows, unit);
  }
}

/** Whether `schema` is an object under pipes, defaults and optionals (a nested section). */
function isWrappedObject(schema: AnySchema): boolean {
  let s: AnySchema | undefined = schema;
  for (let i = 0; i < 8 && s; i++) {
    const def: Record<string, unknown> & { type: string } = s._zod.def;
    if (def.type === 'object') return true;
    s = (def.in ?? def.innerType) as AnySchema | undefined;
  }
  return false;
}

function leaf(
  schema: AnySchema,
  path: string[],
  fallback: unknown,
  rows: SettingRow[],
  unit: string,
): undefined {
  let s = schema;
  let value = fallback;
  // Defaults and optionals around the type itself.
  while (['default', 'prefault', 'optional', 'nullable'].includes(s._zod.def.type)) {
    if (s._zod.def.type === 'default' || s._zod.def.type === 'prefault') value = s._zod.def.defaultValue;
    s = s._zod.def.innerType as AnySchema;
  }
  rows.push({
    path: path.join('.'),
    type: unit === 'ms' ? 'duration' : unit === 'bytes' ? 'size' : typeOf(s),
    default: value === undefined ? '' : JSON.stringify(value),
    unit,
    env: [],
  });
  return undefined;
}

/** A schema's type as a person reads it. */
function typeOf(schema: AnySchema): string {
  const def = schema._zod.def;
  switch (def.type) {
    case 'enum':
      return Object.values(def.entries as Record<string, string>)
        .map((v) => JSON.stringify(v))
        .join(' | ');
    case 'literal':
      return (def.values as unknown[]).map((v) => JSON.stringify(v)).join(' | ');
    case 'number': {
      const checks = (def.checks as { _zod: { def: Record<string, unknown> } }[] | undefined) ?? [];
      const integer = checks.some((c) => c._zod.def.check === 'number_format');
      const min = checks.find((c) => c._zod.def.check === 'greater_than')?._zod.def.value;
      const max = checks.find((c) => c._zod.def.check === 'less_than')?._zod.def.value;
      const range = min !== undefined || max !== undefined ? ` ${min ?? ''}-${max ?? ''}` : '';
      return `${integer ? 'integer' : 'number'}${range}`;
    }
    case 'array':
      return `list of ${typeOf(unwrap(def.element as AnySchema))}`;
    case 'record':
      return `map of ${typeOf(unwrap(def.valueType as AnySchema))}`;
    case 'union':
      return (def.options as AnySchema[]).map((o) => typeOf(unwrap(o))).join(' | ');
    case 'pipe':
      return typeOf(unwrap(def.in as AnySchema));
    case 'object':
      return 'mapping';
    default:
      return def.type;
  }
}

function unwrap(schema: AnySchema): AnySchema {
  let s = schema;
  while (['default', 'prefault', 'optional', 'nullable'].includes(s._zod.def.type))
    s = s._zod.def.innerType as AnySchema;
  return s;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
