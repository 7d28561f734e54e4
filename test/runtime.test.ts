// The Node runtime mcp-cluster supports, ships and is tested on, as the repository states it in four
// places: package.json `engines`, the image (deploy/Dockerfile), the release CI installs (.ci/run)
// and the Node type definitions. These tests keep them in agreement, and keep every dependency's
// install script under an explicit decision (package.json `allowScripts`).
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import semver from 'semver';
import { describe, expect, it } from 'vitest';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const read = (path: string) => readFileSync(join(root, path), 'utf8');

interface PackageJson {
  engines: { node: string };
  devDependencies: Record<string, string>;
  allowScripts?: Record<string, boolean>;
}
const pkg = JSON.parse(read('package.json')) as PackageJson;
const lock = JSON.parse(read('package-lock.json')) as {
  packages: Record<string, { version?: string; hasInstallScript?: boolean; engines?: { node?: string } }>;
};

const range = pkg.engines.node;
/** The oldest release of each line `engines.node` accepts (one per `||` alternative). */
const floors = new semver.Range(range).set.map((comparators) =>
  semver.minVersion(comparators.map((c) => c.value).join(' ')),
);
/** The majors `engines.node` accepts a release of. */
const majors = floors.map((floor) => floor?.major);

/** The majors of every `FROM node:<tag>` stage of the image. */
function imageMajors(): number[] {
  const froms = read('deploy/Dockerfile')
    .split('\n')
    .filter((line) => /^FROM\s/i.test(line));
  return froms.map((line) => {
    const m = /^FROM\s+node:(\d+)[-.\w]*(\s+AS\s+\S+)?\s*$/i.exec(line.trim());
    if (!m) throw new Error(`deploy/Dockerfile: "${line}" is not a node:<major>… image`);
    return Number(m[1]);
  });
}

/** NODE_VERSION and the pinned integrity per architecture, from .ci/run. */
function ciNode(): { version: string; integrity: Record<string, string> } {
  const script = read('.ci/run');
  const version = /^NODE_VERSION=(\S+)$/m.exec(script)?.[1];
  if (!version) throw new Error('.ci/run sets no NODE_VERSION=');
  const integrity = Object.fromEntries(
    [...script.matchAll(/^\s+\[(\w+)\]=(sha512-[A-Za-z0-9+/]+=*)$/gm)].map((m) => [m[1], m[2]]),
  );
  return { version, integrity };
}

describe('the supported Node lines', () => {
  it('engines.node accepts the 22 and 24 lines and nothing else', () => {
    expect(majors).toEqual([22, 24]);
    for (const major of [18, 20, 21, 23, 25, 26]) {
      expect(semver.intersects(`^${major}.0.0`, range), `Node ${major}`).toBe(false);
    }
  });

  it('every dependency in the lockfile runs on the oldest release of each line engines.node accepts', () => {
    const refused: string[] = [];
    for (const [path, entry] of Object.entries(lock.packages)) {
      const wanted = entry.engines?.node;
      if (path === '' || wanted === undefined) continue;
      // rolldown's WebAssembly binding is a fallback, installed only where no native binding exists.
      if (path.endsWith('/@rolldown/binding-wasm32-wasi')) continue;
      for (const floor of floors) {
        if (floor && !semver.satisfies(floor, wanted)) refused.push(`${path} needs ${wanted}, not ${floor}`);
      }
    }
    expect(refused).toEqual([]);
  });

  it('the tests run on a Node release engines.node accepts', () => {
    expect(semver.satisfies(process.versions.node, range), `node ${process.versions.node}`).toBe(true);
  });
});

describe('what ships and what CI runs on', () => {
  it('every stage of deploy/Dockerfile is one Node line of engines.node', () => {
    const majors = imageMajors();
    const image = imageMajors();
    expect(image.length).toBeGreaterThan(0);
    expect(new Set(image).size).toBe(1);
    expect(majors).toContain(image[0]);
  });

  it('.ci/run installs a release of the image’s line that engines.node accepts, pinned for x64 and arm64', () => {
    const { version, integrity } = ciNode();
    expect(semver.major(version)).toBe(imageMajors()[0]);
    expect(semver.satisfies(version, range)).toBe(true);
    expect(Object.keys(integrity).sort()).toEqual(['arm64', 'x64']);
  });

  it('@types/node describes the line the image ships', () => {
    const types = pkg.devDependencies['@types/node'] ?? '';
    expect(semver.valid(types), 'an exact version').toBe(types);
    expect(semver.major(types)).toBe(imageMajors()[0]);
  });
});

describe('install scripts', () => {
  it('every dependency with an install script has an allowScripts decision, and every decision a dependency', () => {
    const withScripts = Object.entries(lock.packages)
      .filter(([path, entry]) => path && entry.hasInstallScript)
      .map(([path]) => path.slice(path.lastIndexOf('node_modules/') + 'node_modules/'.length));
    const decided = Object.keys(pkg.allowScripts ?? {}).map((key) => key.replace(/(.)@.*$/, '$1'));
    expect([...new Set(withScripts)].sort()).toEqual([...new Set(decided)].sort());
  });
});
