import { z } from 'zod';
import { ClusterError } from './errors.js';
import { parseDurationMs, parseSizeBytes } from './units.js';

// One declaration per setting: a zod schema fixes its key in the file, its type, bounds, default
// and unit, and the resolved configuration's types are derived from it (z.output). A setting with
// a unit is parsed into a number and renamed after it (`deadline: 60s` resolves to
// `deadlineMs: 60000`), so code reading the configuration always sees the unit in the name.
// The kernel's configuration (config.ts) and each tool family's per-tool settings are written
// with the same helpers, so a family's durations and sizes read and resolve like the kernel's.

declare const resolvedKey: unique symbol;
/** A schema whose value the resolved configuration holds under another key (type-level mark). */
type Renamed<S, R> = S & { readonly [resolvedKey]: R };
/** How each marked schema's key is renamed at run time. */
const RENAMES = new WeakMap<z.ZodType, (key: string) => string>();

/** Marks `schema` so its setting resolves under `<key><suffix>` (e.g. `Ms`). */
function withUnit<S extends z.ZodType, U extends string>(schema: S, suffix: U): Renamed<S, { suffix: U }> {
  RENAMES.set(schema, (key) => `${key}${suffix}`);
  return schema as Renamed<S, { suffix: U }>;
}

/** Marks `schema` so its setting resolves under `name`, for keys a suffix would not read well. */
export function resolvedAs<S extends z.ZodType, N extends string>(
  name: N,
  schema: S,
): Renamed<S, { name: N }> {
  RENAMES.set(schema, () => name);
  return schema as Renamed<S, { name: N }>;
}

type ResolvedKey<K extends string, S> = S extends { readonly [resolvedKey]: infer R }
  ? R extends { name: infer N extends string }
    ? N
    : R extends { suffix: infer U extends string }
      ? `${K}${U}`
      : K
  : K;

/** Settings as a zod shape: key in the file → schema (built with the helpers of this module). */
export type SettingsShape = z.core.$ZodShape;

/** The resolved form of a section: each value parsed, keys of settings with a unit renamed. */
export type Resolved<Shape extends SettingsShape> = {
  -readonly [K in keyof Shape & string as ResolvedKey<K, Shape[K]>]: z.output<Shape[K]>;
};

/** Key in the file → key in the resolved configuration, for the settings a unit renames. */
export function resolvedKeys(shape: SettingsShape): Map<string, string> {
  const renames = new Map<string, string>();
  for (const [key, schema] of Object.entries(shape)) {
    const rename = RENAMES.get(schema as z.ZodType);
    renames.set(key, rename ? rename(key) : key);
  }
  return renames;
}

/**
 * A section of settings: unknown keys are errors, and settings with a unit are renamed
 * (`duration`, `size`, `resolvedAs`). `unknownKeys` words the error for unknown keys (default
 * zod's `Unrecognized key: "k"`).
 */
export function section<Shape extends SettingsShape>(
  shape: Shape,
  unknownKeys?: (keys: readonly string[]) => string,
) {
  const renames = resolvedKeys(shape);
  const error = unknownKeys
    ? (issue: z.core.$ZodRawIssue) =>
        issue.code === 'unrecognized_keys' ? unknownKeys(issue.keys) : undefined
    : undefined;
  return z.strictObject(shape, error ? { error } : undefined).transform((value) => {
    const parsed = value as Record<string, unknown>;
    // Every declared key, an absent optional one as undefined, as the resolved type says.
    return Object.fromEntries([...renames].map(([key, to]) => [to, parsed[key]])) as Resolved<Shape>;
  });
}

/** Longest duration a setting may have: 24 h (timers past 2^31 ms would fire at once). */
const MAX_DURATION_MS = 24 * 3_600_000;

/**
 * A duration (`250ms`, `30s`, `2m`, `1h`, or a number of ms) of at most 24 h, default `fallback`;
 * resolved in milliseconds as `<key>Ms`.
 */
export const duration = (fallback: string) =>
  withUnit(
    z
      .union([z.string(), z.number()])
      .default(fallback)
      .transform((value, ctx) => {
        const ms = parseDurationMs(value);
        if (ms === undefined) {
          ctx.addIssue({
            code: 'custom',
            message: `"${value}" is not a duration; write e.g. 250ms, 30s, 2m or 1h`,
          });
          return z.NEVER;
        }
        if (ms > MAX_DURATION_MS) {
          ctx.addIssue({ code: 'custom', message: `"${value}" is longer than the 24h limit on durations` });
          return z.NEVER;
        }
        return ms;
      }),
    'Ms',
  );

/** A size (`512kb`, `1mb`, `1gb`, or a number of bytes), default `fallback`; resolved in bytes as `<key>Bytes`. */
export const size = (fallback: string) =>
  withUnit(
    z
      .union([z.string(), z.number()])
      .default(fallback)
      .transform((value, ctx) => {
        const bytes = parseSizeBytes(value);
        if (bytes === undefined) {
          ctx.addIssue({ code: 'custom', message: `"${value}" is not a size; write e.g. 512kb, 1mb or 1gb` });
          return z.NEVER;
        }
        return bytes;
      }),
    'Bytes',
  );

/** What the kernel knows of every tool when reading a family's settings of it. */
interface NamedTool {
  name: string;
  template: string;
}

/**
 * The per-tool settings of one tool family: declared once, as a zod shape, and read typed.
 *
 * One shape per family, not per template: a family's templates share a backend protocol and
 * adapter code, and so their limits (inference's `maxTokens` bounds generate_text, chat and
 * summarize alike). A setting only some templates use is still the family's; give it a default
 * (or make it optional) so the others ignore it. Every setting should have one anyway: the
 * built-in tools (`ToolFamily.defaults`) give none.
 *
 * In the file the settings sit flat on the tool entry beside the keys every tool has (`maxTexts:
 * 64`, `batch: { maxSize: 32 }`); the configuration validates each tool's other keys against its
 * template's family, so a family adds a setting without any change to the kernel. Resolved, they
 * stay flat on the tool (`tool.maxTexts`, `tool.batch.maxWaitMs`) and are read through `of`.
 */
export interface ToolSettingsSpec<Shape extends SettingsShape = SettingsShape> {
  /** Setting name in the file → schema; `duration`, `size` and `section` give units and nesting. */
  readonly shape: Shape;
  /**
   * The settings of `tool`, typed and resolved (durations in `…Ms`). `tool` must be a resolved
   * tool of a template of this family (or a copy of one); anything else throws INVALID_CONFIG.
   */
  of(tool: NamedTool): Resolved<Shape>;
}

/** The settings of `spec`, resolved: what `spec.of(tool)` returns. */
export type ToolSettingsOf<Spec extends ToolSettingsSpec> = ReturnType<Spec['of']>;

/** Declares a family's per-tool settings (see ToolSettingsSpec). */
export function toolSettings<Shape extends SettingsShape>(shape: Shape): ToolSettingsSpec<Shape> {
  const keys = [...resolvedKeys(shape).values()];
  return {
    shape,
    of(tool) {
      // Resolving writes every declared key (an absent optional one as undefined), so a tool
      // lacking one was resolved against another family.
      for (const key of keys) {
        if (!(key in tool)) {
          throw new ClusterError(
            'INVALID_CONFIG',
            `tool ${tool.name} (template ${tool.template}) has no setting ${key}: its template is of another family`,
          );
        }
      }
      return tool as unknown as Resolved<Shape>;
    },
  };
}
