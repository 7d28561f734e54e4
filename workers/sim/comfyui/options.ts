/**
 * Options of the simulated ComfyUI server: the documented type, its defaults, validation of a
 * partial input, and the command-line parser (`--steps-per-second 20` → `{ stepsPerSecond: 20 }`).
 */

/** What the simulated server does wrong on purpose, for testing clients. */
export type ComfySimFailure =
  /** Behave. */
  | 'none'
  /** `POST /prompt` answers 500 with aiohttp's plain-text error page. */
  | '5xx'
  /** `POST /prompt` answers 200 with a body that is not JSON. */
  | 'malformed'
  /** Prompts are accepted but never progress (no messages) until interrupted or deleted. */
  | 'stall'
  /** WebSocket connections of a prompt's client are dropped after its first sampler step. */
  | 'drop-ws'
  /** The sampler fails after its first step with `execution_error`. */
  | 'exec-error';

/** The failure modes, in documentation order. */
export const COMFY_SIM_FAILURES: readonly ComfySimFailure[] = [
  'none',
  '5xx',
  'malformed',
  'stall',
  'drop-ws',
  'exec-error',
];

/** Whether `value` names a failure mode. */
export function isComfySimFailure(value: unknown): value is ComfySimFailure {
  return typeof value === 'string' && (COMFY_SIM_FAILURES as readonly string[]).includes(value);
}

/** Settings of one simulated ComfyUI instance (one GPU). Durations end in `Ms`, sizes in `Bytes`. */
export interface ComfySimOptions {
  /** Interface to bind. Default `127.0.0.1` (loopback only). */
  host: string;
  /** TCP port to listen on; `0` picks a free port (read it back from `ComfySim.port`). Default `0`. */
  port: number;
  /** Sampler speed: KSampler steps per second; one `progress` message per step. Default `20`. */
  stepsPerSecond: number;
  /**
   * Largest EmptyLatentImage width and height in pixels; larger is a 400 `value_bigger_than_max`.
   * Also bounds the pixels of one batch (width × height × batch_size ≤ maxImageSize²). Default `8192`.
   */
  maxImageSize: number;
  /** Most EmptyLatentImage `batch_size`. Default `16`. */
  maxBatchSize: number;
  /** Most prompts waiting in the queue; one more is answered 503. Default `1000`. */
  maxQueue: number;
  /** Most finished prompts kept in `/history` (oldest dropped first, with their images). Default `1000`. */
  maxHistory: number;
  /** Largest request body accepted, in bytes; more is answered with 413. Default `4194304` (4 MiB). */
  maxBodyBytes: number;
  /** Failure mode at start (see `ComfySim.setFailure`). Default `none`. */
  failure: ComfySimFailure;
}

/** The defaults documented on `ComfySimOptions`. */
export const comfySimOptionDefaults: Readonly<ComfySimOptions> = Object.freeze({
  host: '127.0.0.1',
  port: 0,
  stepsPerSecond: 20,
  maxImageSize: 8192,
  maxBatchSize: 16,
  maxQueue: 1000,
  maxHistory: 1000,
  maxBodyBytes: 4 * 1024 * 1024,
  failure: 'none' as ComfySimFailure,
});

type NumberKey = Exclude<keyof ComfySimOptions, 'host' | 'failure'>;

interface NumberRule {
  integer: boolean;
  /** Smallest allowed value; `exclusive` when the bound itself is not allowed. */
  min: number;
  exclusive?: boolean;
  max: number;
}

const numberRules: Record<NumberKey, NumberRule> = {
  port: { integer: true, min: 0, max: 65_535 },
  stepsPerSecond: { integer: false, min: 0, exclusive: true, max: 1_000_000 },
  maxImageSize: { integer: true, min: 16, max: 16_384 },
  maxBatchSize: { integer: true, min: 1, max: 4096 },
  maxQueue: { integer: true, min: 1, max: 10_000_000 },
  maxHistory: { integer: true, min: 1, max: 10_000_000 },
  maxBodyBytes: { integer: true, min: 1, max: 1024 * 1024 * 1024 },
};

function isNumberKey(key: string): key is NumberKey {
  return Object.hasOwn(numberRules, key);
}

function numberProblem(value: number, rule: NumberRule): string | undefined {
  if (!Number.isFinite(value)) return 'expected a finite number';
  if (rule.integer && !Number.isInteger(value)) return 'expected an integer';
  if (rule.exclusive ? value <= rule.min : value < rule.min) {
    return `expected a number ${rule.exclusive ? '>' : '>='} ${rule.min}`;
  }
  if (value > rule.max) return `expected a number <= ${rule.max}`;
  return undefined;
}

/**
 * Fills in defaults and checks every option. Throws an Error naming the option and its value
 * when one is out of range, of the wrong type or unknown.
 */
export function resolveComfySimOptions(input: Partial<ComfySimOptions> = {}): ComfySimOptions {
  const resolved: ComfySimOptions = { ...comfySimOptionDefaults };
  for (const [key, value] of Object.entries(input)) {
    if (value === undefined) continue;
    if (key === 'host') {
      if (typeof value !== 'string' || value.trim() === '') {
        throw new Error(`comfyui sim option host: expected a non-empty string, got ${JSON.stringify(value)}`);
      }
      resolved.host = value;
    } else if (key === 'failure') {
      if (!isComfySimFailure(value)) {
        throw new Error(
          `comfyui sim option failure: expected one of ${COMFY_SIM_FAILURES.join(', ')}, got ${JSON.stringify(value)}`,
        );
      }
      resolved.failure = value;
    } else if (isNumberKey(key)) {
      if (typeof value !== 'number') {
        throw new Error(
          `comfyui sim option ${key}: expected a number, got ${JSON.stringify(value) ?? String(value)}`,
        );
      }
      const problem = numberProblem(value, numberRules[key]);
      if (problem) throw new Error(`comfyui sim option ${key}: ${problem}, got ${value}`);
      resolved[key] = value;
    } else {
      throw new Error(`comfyui sim option ${key}: unknown option`);
    }
  }
  return resolved;
}

function kebabCase(key: string): string {
  return key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
}

const flagToKey: ReadonlyMap<string, keyof ComfySimOptions> = new Map(
  (Object.keys(comfySimOptionDefaults) as (keyof ComfySimOptions)[]).map((key) => [
    `--${kebabCase(key)}`,
    key,
  ]),
);

/**
 * The command-line flags `parseComfySimArgs` understands, e.g. `--steps-per-second`. `--kind
 * comfyui` is accepted too (and ignored) so a launcher can pass its own argv through.
 */
export const comfySimFlags: readonly string[] = [...flagToKey.keys(), '--kind'];

/**
 * Parses `--port 8188 --steps-per-second 20 --failure stall …` (also `--flag=value`), one flag
 * per option in kebab-case. Throws an Error naming the flag and the value for an unknown flag, a
 * missing value, a non-numeric value for a numeric option, or a value out of range.
 */
export function parseComfySimArgs(argv: readonly string[]): Partial<ComfySimOptions> {
  const parsed: Partial<ComfySimOptions> = {};
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] ?? '';
    if (!arg.startsWith('--')) {
      throw new Error(`comfyui sim: unexpected argument "${arg}"; flags are ${comfySimFlags.join(', ')}`);
    }
    const eq = arg.indexOf('=');
    const flag = eq === -1 ? arg : arg.slice(0, eq);
    const key = flagToKey.get(flag);
    if (key === undefined && flag !== '--kind') {
      throw new Error(`comfyui sim: unknown flag "${flag}"; flags are ${comfySimFlags.join(', ')}`);
    }
    let value: string | undefined;
    if (eq !== -1) {
      value = arg.slice(eq + 1);
    } else {
      value = argv[i + 1];
      if (value === undefined || value.startsWith('--'))
        throw new Error(`comfyui sim: flag ${flag} needs a value`);
      i++;
    }
    if (key === undefined) {
      if (value !== 'comfyui') throw new Error(`comfyui sim: flag --kind must be "comfyui", got "${value}"`);
      continue;
    }
    if (key === 'host') {
      if (value.trim() === '')
        throw new Error(`comfyui sim: flag ${flag} needs a non-empty value, got "${value}"`);
      parsed.host = value;
      continue;
    }
    if (key === 'failure') {
      if (!isComfySimFailure(value)) {
        throw new Error(
          `comfyui sim: flag ${flag} expects one of ${COMFY_SIM_FAILURES.join(', ')}, got "${value}"`,
        );
      }
      parsed.failure = value;
      continue;
    }
    const numeric = value.trim() === '' ? Number.NaN : Number(value);
    if (Number.isNaN(numeric)) throw new Error(`comfyui sim: flag ${flag} expects a number, got "${value}"`);
    const problem = numberProblem(numeric, numberRules[key]);
    if (problem) throw new Error(`comfyui sim: flag ${flag}: ${problem}, got "${value}"`);
    parsed[key] = numeric;
  }
  return parsed;
}
