import { Ajv, type Options } from 'ajv';
import { Ajv2020 } from 'ajv/dist/2020.js';

/** The `$schema` of JSON Schema draft 2020-12 (the dialect MCP 2025-11-25 names as its default). */
export const JSON_SCHEMA_2020_12 = 'https://json-schema.org/draft/2020-12/schema';

/** The JSON Schema dialects tool schemas are checked in. */
export type SchemaDialect = 'draft-07' | '2020-12';

/**
 * The dialect `schema` is checked in: 2020-12 when its `$schema` says so (the draft-07 Ajv refuses
 * that meta-schema, and keywords such as `$defs` and `prefixItems` differ), else draft-07, which
 * tool schemas without `$schema` have always been checked with.
 */
export function schemaDialect(schema: Record<string, unknown>): SchemaDialect {
  const uri = typeof schema.$schema === 'string' ? schema.$schema.replace(/#$/, '') : '';
  return uri === JSON_SCHEMA_2020_12 ? '2020-12' : 'draft-07';
}

/** A fresh Ajv for `dialect`. */
export function ajvFor(dialect: SchemaDialect, options: Options): Ajv {
  return dialect === '2020-12' ? new Ajv2020(options) : new Ajv(options);
}
