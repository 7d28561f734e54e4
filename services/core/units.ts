/**
 * Parsing of human-written durations and sizes in the config file and on the command line.
 * Plain numbers are milliseconds / bytes; strings carry a unit (`250ms`, `30s`, `2m`, `1h`;
 * `512b`, `64kb`, `1mb`, `1gb`, binary multiples of 1024).
 */

const DURATION = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h)$/;
const DURATION_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
const SIZE = /^(\d+(?:\.\d+)?)\s*(b|kb|mb|gb|kib|mib|gib)$/i;
const SIZE_BYTES: Record<string, number> = {
  b: 1,
  kb: 1024,
  kib: 1024,
  mb: 1024 ** 2,
  mib: 1024 ** 2,
  gb: 1024 ** 3,
  gib: 1024 ** 3,
};

/** Milliseconds from `250ms`, `30s`, `2m`, `1h` or a number of milliseconds; `undefined` if malformed. */
export function parseDurationMs(value: string | number): number | undefined {
  if (typeof value === 'number') return Number.isFinite(value) && value >= 0 ? value : undefined;
  const m = DURATION.exec(value.trim());
  if (!m?.[1] || !m[2]) return undefined;
  return Math.round(Number(m[1]) * (DURATION_MS[m[2]] ?? Number.NaN));
}

/** Bytes from `512b`, `64kb`, `1mb`, `1gb` or a number of bytes; `undefined` if malformed. */
export function parseSizeBytes(value: string | number): number | undefined {
  if (typeof value === 'number') return Number.isInteger(value) && value >= 0 ? value : undefined;
  const m = SIZE.exec(value.trim());
  if (!m?.[1] || !m[2]) return undefined;
  return Math.round(Number(m[1]) * (SIZE_BYTES[m[2].toLowerCase()] ?? Number.NaN));
}
