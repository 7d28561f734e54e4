import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { posix } from 'node:path';
import { describe, expect, it } from 'vitest';
import { cliReference, families } from '../services/cli/index.js';
import { USAGE } from '../services/cli/usage.js';
import { configReference } from '../services/core/index.js';
import { references } from './docs/reference.js';
import { resolveConfig } from './support/families.js';

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

/** The Markdown files a newcomer reads: the README and every page under docs/. */
function docPages(): string[] {
  const dir = new URL('../docs/', import.meta.url);
  const pages = ['README.md'];
  for (const sub of ['', 'reference/'])
    for (const name of readdirSync(new URL(sub, dir)))
      if (name.endsWith('.md')) pages.push(`docs/${sub}${name}`);
  return pages;
}

/** GitHub's anchor of a heading: lower case, punctuation but `-` and `_` dropped, spaces as `-`. */
const anchorOf = (heading: string) =>
  heading
    .trim()
    .toLowerCase()
    .replace(/[`*()[\]{}:,.!?"'/+=&<>@#$%^~|\\]/g, '')
    .replace(/ /g, '-');

/** The text outside fenced code blocks (links and headings in code are not rendered). */
const prose = (text: string) => text.replace(/```[\s\S]*?```/g, '');

describe('the docs', () => {
  it('link only to pages and headings that exist', () => {
    const root = new URL('../', import.meta.url);
    const anchors = new Map<string, Set<string>>();
    for (const page of docPages()) {
      const headings = [...prose(readFileSync(new URL(page, root), 'utf8')).matchAll(/^#{1,6} (.*)$/gm)];
      anchors.set(page, new Set(headings.map((h) => anchorOf(h[1] ?? ''))));
    }
    const broken: string[] = [];
    for (const page of docPages()) {
      for (const m of prose(readFileSync(new URL(page, root), 'utf8')).matchAll(/\]\(([^)\s]+)\)/g)) {
        const url = m[1] ?? '';
        if (/^(https?:|mailto:)/.test(url)) continue;
        const [path, fragment] = url.split('#');
        const target = path ? posix.normalize(posix.join(posix.dirname(page), path)) : page;
        if (!existsSync(new URL(target, root))) broken.push(`${page}: ${url} (no such file)`);
        else if (fragment && target.endsWith('.md') && !anchors.get(target)?.has(fragment))
          broken.push(`${page}: ${url} (no such heading)`);
      }
    }
    expect(broken).toEqual([]);
  });

  it('show a configuration example that is valid and names every setting', () => {
    const page = readFileSync(new URL('../docs/running.md', import.meta.url), 'utf8');
    const block = /<!-- doc-test: config-example -->\n```yaml\n([\s\S]*?)```/.exec(page)?.[1];
    expect(block, 'the annotated example in docs/running.md').toBeDefined();
    const example = String(block);
    // Valid as it stands: the file it shows would start a cluster.
    expect(() => resolveConfig(example, {})).not.toThrow();
    // Every setting of the schema appears in it (as a key, commented out where it has no default).
    const keys = new Set([...example.matchAll(/([A-Za-z][A-Za-z0-9]*):/g)].map((m) => m[1]));
    const missing = configReference(families)
      .map((row) => row.path.split('.').pop()?.replace('[]', '') ?? '')
      .filter((key) => key !== '<name>' && !keys.has(key));
    expect(missing).toEqual([]);
  });
});
