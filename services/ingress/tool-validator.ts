import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import type { ToolDefinition } from '../core/index.js';

/** Validates tool arguments against each tool's input schema, filling in schema defaults. */
export class ToolValidator {
  private readonly validators = new Map<string, ValidateFunction>();

  constructor(tools: ToolDefinition[]) {
    const ajv = new Ajv({ allErrors: true, useDefaults: true, strict: false });
    for (const tool of tools) this.validators.set(tool.name, ajv.compile(tool.inputSchema));
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
