import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { cliReference } from '../services/cli/index.js';
import { USAGE } from '../services/cli/usage.js';
import { references } from './docs/reference.js';

// The references under docs/reference/ are generated from the code (`npm run docs`); a file that
// no longer matches what the code generates fails here, so the docs cannot drift from the code.

describe('generated references', () => {
  it.each(Object.keys(references()))('%s is what `npm run docs` writes from the code', (path) => {
    const onDisk = readFileSync(new URL(`../${path}`, import.meta.url), 'utf8');
    expect(onDisk, `${path} is out of date: run npm run docs and commit the result`).toBe(references()[path]);
  });

  it('lists every setting, command, metric and error code the code has', () => {
    const docs = references();
    expect(docs['docs/reference/configuration.md']).toContain(
      '`ingress.resultLinks.minSize` | size | `"0b"` | bytes |',
    );
    expect(docs['docs/reference/configuration.md']).toContain('`MCP_CLUSTER_SESSION_SECRET`');
    expect(docs['docs/reference/metrics.md']).toContain(
      '`mcp_cluster_ingress_calls_total` | counter | tool, outcome, tenant |',
    );
    expect(docs['docs/reference/errors.md']).toContain('`HEADER_MISMATCH` | JSON-RPC error -32020 | 400 |');
    expect(docs['docs/reference/cli.md']).toContain('## `mcp-cluster batch submit FILE`');
  });

  it('names in `mcp-cluster --help` every flag a command accepts (the sim aside, which lists its own)', () => {
    for (const command of cliReference()) {
      if (command.command === 'sim') continue;
      for (const { flag } of command.flags) {
        const long = flag.replace(/^-\w, /, '');
        const short = /^(-\w), /.exec(flag)?.[1];
        if (long === '--help') continue;
        // Either spelling, where it has a short one (`-o FILE`).
        const named = USAGE.includes(long) || (short !== undefined && USAGE.includes(`${short} `));
        expect(named, `mcp-cluster ${command.command} ${long} is not in --help`).toBe(true);
      }
    }
  });
});
