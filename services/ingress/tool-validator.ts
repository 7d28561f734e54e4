import type { Ajv, ErrorObject, ValidateFunction } from 'ajv';
import { ajvFor, schemaDialect, type ToolDefinition } from '../core/index.js';

/** Validates tool arguments against each tool's input schema, filling in schema defaults. */
export class ToolValidator {
  private readonly validators = new Map<string, ValidateFunction>();

  constructor(tools: ToolDefinition[]) {
    // A schema's `$schema` picks the dialect (draft-07 or 2020-12); one Ajv per dialect.
    const ajvs = new Map<string, Ajv>();
    for (const tool of tools) {
      const dialect = schemaDialect(tool.inputSchema);
      const ajv = ajvs.get(dialect) ?? ajvFor(dialect, { allErrors: true, useDefaults: true, strict: false });
      ajvs.set(dialect, ajv);
      this.validators.set(tool.name, ajv.compile(tool.inputSchema));
    }
  }

  /**
   * Checks (and completes with defaults, in place) the arguments of a call to `tool`.
   * Returns `undefined` when valid, else a message naming each offending argument.
   */
  check(tool: string, args: Record<string, unknown>): string | undefined {
    const validate = this.validators.get(tool);
    if (!validate) return `no schema for tool ${tool}`;
    if (validate(args)) return undefined;
    const problems = (validate.errors ?? []).map(describe);
    return `invalid arguments for ${tool}: ${[...new Set(problems)].join('; ')}`;
  }
}

function describe(error: ErrorObject): string {
  const where = error.instancePath ? `arguments${error.instancePath.replaceAll('/', '.')}` : 'arguments';
  if (error.keyword === 'additionalProperties') {
    return `${where} has unknown property "${String(error.params.additionalProperty)}"`;
  }
  if (error.keyword === 'required')
    return `${where} is missing required property "${String(error.params.missingProperty)}"`;
  return `${where} ${error.message ?? 'is invalid'}`;
}
