import { ClusterError } from '../../core/index.js';
import { createApiKey, keysFileEntry } from '../../ingress/index.js';
import { type ExitCode, parse } from '../args.js';
import { help } from '../usage.js';

const TENANT = /^[A-Za-z0-9_.-]{1,64}$/;
const SCOPE = /^[\x21\x23-\x5B\x5D-\x7E]{1,128}$/;
/** Longest `--expires`: ten years, in days. */
const MAX_DAYS = 3650;

/** The flags of `mcp-cluster keys create`. */
export const KEYS_OPTIONS = {
  tenant: { type: 'string' },
  scopes: { type: 'string' },
  expires: { type: 'string' },
  name: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

/**
 * `mcp-cluster keys create --tenant NAME [--scopes a,b] [--expires 90d] [--name TEXT]`: mints an
 * API key, prints it once on stdout with the entry to add to the keys file (`auth.apiKeys.file`).
 * Only the entry's hash can check the key: lost keys are replaced, not recovered.
 */
export async function keys(args: string[]): Promise<ExitCode> {
  const [sub, ...rest] = args;
  if (sub === '-h' || sub === '--help') return help();
  if (sub !== 'create') {
    process.stderr.write(
      'mcp-cluster: usage: mcp-cluster keys create --tenant NAME [--scopes a,b] [--expires 90d] [--name TEXT]\n',
    );
    return 2;
  }
  const { values } = parse(rest, KEYS_OPTIONS);
  if (values.help) return help();
  const tenant = values.tenant;
  if (tenant === undefined || !TENANT.test(tenant)) {
    throw new ClusterError(
      'INVALID_CONFIG',
      `--tenant must name the key's tenant: 1-64 of A-Z a-z 0-9 _ . -${tenant === undefined ? '' : `, got "${tenant}"`}`,
    );
  }
  const scopes = (values.scopes ?? '').split(/[\s,]+/).filter((s) => s !== '');
  const badScope = scopes.find((s) => !SCOPE.test(s));
  if (badScope !== undefined)
    throw new ClusterError(
      'INVALID_CONFIG',
      `--scopes: "${badScope}" is not a scope (printable ASCII, no quotes)`,
    );
  const expires = values.expires === undefined ? undefined : expiryOf(values.expires);
  if (values.name !== undefined && values.name.length > 200)
    throw new ClusterError('INVALID_CONFIG', '--name is at most 200 characters');

  const created = createApiKey({
    tenant,
    scopes,
    ...(expires ? { expires } : {}),
    ...(values.name ? { name: values.name } : {}),
  });
  process.stdout.write(
    [
      'API key (shown only now; mcp-cluster keeps only its hash):',
      '',
      `  ${created.key}`,
      '',
      'Add this entry under `keys:` in the keys file (auth.apiKeys.file); every ingress re-reads the',
      'file when it changes, or at once on SIGHUP:',
      '',
      keysFileEntry(created.entry)
        .split('\n')
        .map((line) => `  ${line}`)
        .join('\n'),
      '',
      'Callers send it as `Authorization: Bearer <key>` or `X-API-Key: <key>`. To revoke it, delete the entry.',
      '',
    ].join('\n'),
  );
  return 0;
}

/** `90d`, `12h` or `30m` from now. */
function expiryOf(text: string): Date {
  const m = /^(\d{1,6})([dhm])$/.exec(text);
  const amount = m ? Number(m[1]) : Number.NaN;
  const unitMs = m?.[2] === 'd' ? 86_400_000 : m?.[2] === 'h' ? 3_600_000 : 60_000;
  if (!m || amount < 1 || amount * unitMs > MAX_DAYS * 86_400_000) {
    throw new ClusterError(
      'INVALID_CONFIG',
      `--expires takes a lifetime such as 90d, 12h or 30m (at most ${MAX_DAYS}d), got "${text}"`,
    );
  }
  return new Date(Date.now() + amount * unitMs);
}
