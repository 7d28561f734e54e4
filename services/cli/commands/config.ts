import { COMMON, configFrom, type ExitCode, parse } from '../args.js';
import { help } from '../usage.js';

/**
 * `mcp-cluster config check [--config FILE]`: resolves the configuration (file, then environment)
 * and prints its broker, pools and tools as JSON; exit 2 naming every offending setting.
 */
export async function config(args: string[]): Promise<ExitCode> {
  const [sub, ...rest] = args;
  if (sub === '-h' || sub === '--help') return help();
  if (sub !== 'check') {
    process.stderr.write('mcp-cluster: usage: mcp-cluster config check [--config FILE]\n');
    return 2;
  }
  const { values } = parse(rest, COMMON);
  if (values.help) return help();
  const resolved = configFrom(values, {});
  process.stdout.write(
    `${JSON.stringify(
      {
        ok: true,
        broker: resolved.brokerUrl,
        namespace: resolved.namespace,
        pools: Object.fromEntries(
          Object.values(resolved.pools).map((p) => [
            p.name,
            { backend: p.backend, endpoints: p.endpoints.map((e) => e.url) },
          ]),
        ),
        tools: resolved.tools.map((t) => ({
          name: t.name,
          pool: t.pool,
          model: t.model,
          deadlineMs: t.deadlineMs,
        })),
      },
      null,
      2,
    )}\n`,
  );
  return 0;
}
