import { simFlags } from '../../workers/sim/index.js';
import { COMMON } from './args.js';
import { BATCH_OPTIONS, BATCH_SUBCOMMANDS } from './commands/batch.js';
import { INGRESS_OPTIONS } from './commands/ingress.js';
import { KEYS_OPTIONS } from './commands/keys.js';
import { PLAN_OPTIONS } from './commands/plan.js';
import { UP_OPTIONS } from './commands/up.js';
import { WORKER_OPTIONS } from './commands/worker.js';
import { USAGE } from './usage.js';

/** One flag of a command as the CLI reference lists it. */
export interface FlagRow {
  /** `--port`, `-o, --output`. */
  flag: string;
  /** `VALUE` for a flag that takes one (`VALUE ...` when it may repeat), empty for a switch. */
  value: string;
  description: string;
}

/** One command (or subcommand) of `mcp-cluster`. */
export interface CommandRow {
  command: string;
  /** Its lines of `mcp-cluster --help`. */
  synopsis: string[];
  flags: FlagRow[];
}

type Options = Record<string, { type: 'string' | 'boolean'; short?: string; multiple?: boolean }>;

/**
 * What each flag does, by name (`port`), or by command and name (`plan window`) where a command
 * reads it differently. Every flag a command accepts must be here: the reference test fails on a
 * flag without a description, so a new flag cannot reach users undocumented.
 */
export const FLAG_HELP: Record<string, string> = {
  config: 'YAML configuration file (default: $MCP_CLUSTER_CONFIG, else the built-in defaults)',
  broker: 'nats://host:port, redis://host:port or memory: (overrides broker.url)',
  port: 'HTTP port: /mcp on the ingress; /healthz, /readyz and /metrics on a worker or the autoscaler',
  help: 'prints the usage',
  autoscale: "sizes each pool's in-process workers by its load instead of one worker per pool",
  conformance: "adds the MCP conformance suite's fixture tools (pool conformance)",
  'delivery-port': 'port of the gRPC delivery server workers send results to (ingress.delivery.port)',
  pool: 'the pool this worker serves (a key of pools)',
  tenant: 'the tenant the key belongs to (letters, digits, ".", "_", "-")',
  scopes: 'comma-separated scopes the key grants',
  expires: 'lifetime of the key, e.g. 90d or 12h (default: no expiry)',
  name: 'a label for the key, shown in the keys file',
  metrics: 'a /metrics URL to observe (repeat for each replica); plan takes two scrapes 10 s apart',
  prometheus: 'a Prometheus base URL to read rates from instead of /metrics pages',
  window: 'observation window (default 10s on /metrics pages, 5m on Prometheus)',
  'what-if': 'multiplies the observed arrival rates (and --agents), e.g. 2 or 1.5x',
  model:
    'open-loop queueing model: mgc (default; the service-time variability as measured) or mmc (exponential service times)',
  agents:
    'plans a closed loop: POOL=N (or N for every pool with calls) agents that each call again after their answer',
  'think-time':
    "the agents' mean time between an answer and their next call (default: estimated from the observation)",
  'target-wait': 'queue-wait target the replicas are sized for (default 1s)',
  percentile: 'the wait percentile held to the target (default 0.95)',
  'batch-deadline': 'deadline batch backlogs are sized to finish by (default 1h)',
  json: 'prints JSON instead of a table',
  url: 'the cluster base URL ($MCP_CLUSTER_URL, default http://127.0.0.1:3000)',
  'api-key': 'API key to authenticate with ($MCP_CLUSTER_API_KEY)',
  token: 'OAuth access token to authenticate with ($MCP_CLUSTER_TOKEN)',
  'batch pool': 'the pool whose embed tool runs the job (default batch.pool)',
  wait: 'shows progress until the job ends; exit 0 only if it completed',
  limit: 'how many jobs to list (default 20)',
  output: 'file the output rows are written to',
  errors: 'file the error rows are written to',
};

/** The flags of one command, described from FLAG_HELP; throws naming a flag it lacks. */
function flagsOf(command: string, options: Options): FlagRow[] {
  return Object.entries(options).map(([name, spec]) => {
    const description = FLAG_HELP[`${command} ${name}`] ?? FLAG_HELP[name];
    if (description === undefined)
      throw new Error(`mcp-cluster ${command}: flag --${name} has no description in FLAG_HELP`);
    return {
      flag: `${spec.short ? `-${spec.short}, ` : ''}--${name}`,
      value: spec.type === 'boolean' ? '' : spec.multiple ? 'VALUE ...' : 'VALUE',
      description,
    };
  });
}

/** Lines of `--help` for `command` (its synopsis line and the indented lines under it). */
function synopsisOf(command: string): string[] {
  const lines = USAGE.split('\n');
  const out: string[] = [];
  let inside = false;
  for (const line of lines) {
    if (line.startsWith('  mcp-cluster '))
      inside = line.startsWith(`  mcp-cluster ${command} `) || line === `  mcp-cluster ${command}`;
    else if (!line.startsWith('    ')) inside = false;
    if (inside) out.push(line.trimEnd());
  }
  return out;
}

/**
 * Every command with the flags it accepts, taken from the option tables the commands parse
 * with (and the simulator's flag table), and its lines of `--help`.
 */
export function cliReference(): CommandRow[] {
  const simOptions: Options = Object.fromEntries(simFlags.map((f) => [f.slice(2), { type: 'string' }]));
  const rows: CommandRow[] = [
    { command: 'up', synopsis: synopsisOf('up'), flags: flagsOf('up', UP_OPTIONS) },
    { command: 'ingress', synopsis: synopsisOf('ingress'), flags: flagsOf('ingress', INGRESS_OPTIONS) },
    { command: 'worker', synopsis: synopsisOf('worker'), flags: flagsOf('worker', WORKER_OPTIONS) },
    { command: 'autoscaler', synopsis: synopsisOf('autoscaler'), flags: flagsOf('autoscaler', COMMON) },
    {
      command: 'sim',
      synopsis: synopsisOf('sim'),
      flags: Object.keys(simOptions).map((name) => ({
        flag: `--${name}`,
        value: 'VALUE',
        description:
          'a simulated backend setting (see SimOptions in workers/sim/options.ts for its unit and default)',
      })),
    },
    { command: 'config check', synopsis: synopsisOf('config'), flags: flagsOf('config', COMMON) },
    { command: 'plan', synopsis: synopsisOf('plan'), flags: flagsOf('plan', PLAN_OPTIONS) },
    { command: 'keys create', synopsis: synopsisOf('keys'), flags: flagsOf('keys', KEYS_OPTIONS) },
  ];
  for (const [sub, spec] of Object.entries(BATCH_SUBCOMMANDS)) {
    rows.push({
      command: `batch ${sub}${spec.args.length > 0 ? ` ${spec.args.join(' ')}` : ''}`,
      synopsis: synopsisOf('batch').filter((l) => l.includes(`batch ${sub}`) || l.includes(`| ${sub}`)),
      flags: flagsOf('batch', { ...BATCH_OPTIONS, ...spec.flags }),
    });
  }
  return rows;
}
