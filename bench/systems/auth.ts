import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createApiKey, keysFileEntry } from '../../services/ingress/index.js';
import { freePort } from '../../test/support/brokers.js';
import { startAuthorizationServer } from '../../test/support/oidc.js';
import { removeTempDir, trackTempDir } from '../../test/support/process-guard.js';

/** How the benchmark's cluster authenticates its callers. */
export type BenchAuthMode = 'none' | 'api-keys' | 'oauth';

/**
 * Authentication for a benchmark run: the cluster's `auth:` section, the port the ingress must
 * listen on (an OAuth resource URL names it), and the header every load-generator request sends.
 */
export interface BenchAuth {
  /** YAML lines of the `auth:` section. */
  yaml: string;
  port: number;
  headers: Record<string, string>;
  /** Stops the authorization server and removes the keys file. */
  close(): Promise<void>;
}

/**
 * Sets up `mode`: an API key in a keys file, or a real OpenID provider (the test harness's
 * `oidc-provider`) and one access token, RS256-signed, which every call presents and the ingress
 * verifies against the cached key set. Undefined for `none`.
 */
export async function prepareBenchAuth(mode: BenchAuthMode): Promise<BenchAuth | undefined> {
  if (mode === 'none') return undefined;
  const port = await freePort();
  if (mode === 'api-keys') {
    const dir = mkdtempSync(join(tmpdir(), 'mcp-cluster-bench-keys-'));
    trackTempDir(dir);
    const { key, entry } = createApiKey({ tenant: 'bench', scopes: ['mcp'] });
    const file = join(dir, 'keys.yaml');
    writeFileSync(file, `keys:\n${keysFileEntry(entry)}\n`);
    return {
      yaml: ['auth:', '  mode: api-keys', `  apiKeys: { file: ${JSON.stringify(file)} }`].join('\n'),
      port,
      headers: { authorization: `Bearer ${key}` },
      close: async () => removeTempDir(dir),
    };
  }
  const as = await startAuthorizationServer({
    clients: [{ clientId: 'bench', clientSecret: 'bench-secret', scope: 'mcp', tenant: 'bench' }],
    accessTokenTtlSeconds: 3600,
  });
  const resource = `http://127.0.0.1:${port}/mcp`;
  const token = await as.token('bench', { resource });
  return {
    yaml: [
      'auth:',
      '  mode: oauth',
      `  resource: ${JSON.stringify(resource)}`,
      '  requiredScopes: [mcp]',
      `  oauth: { issuer: ${JSON.stringify(as.issuer)} }`,
    ].join('\n'),
    port,
    headers: { authorization: `Bearer ${token}` },
    close: () => as.close(),
  };
}
