#!/usr/bin/env node
import { ClusterError } from '../core/index.js';
import { type ExitCode, SERVING } from './args.js';
import { autoscaler } from './commands/autoscaler.js';
import { batch } from './commands/batch.js';
import { config } from './commands/config.js';
import { ingress } from './commands/ingress.js';
import { keys } from './commands/keys.js';
import { plan } from './commands/plan.js';
import { sim } from './commands/sim.js';
import { up } from './commands/up.js';
import { worker } from './commands/worker.js';
import { USAGE } from './usage.js';

/** Every command, each in its own module under `commands/`. */
const COMMANDS: Record<string, (args: string[]) => Promise<ExitCode>> = {
  up,
  ingress,
  worker,
  autoscaler,
  sim,
  config,
  plan,
  keys,
  batch,
};

async function main(argv: string[]): Promise<ExitCode> {
  const [command, ...rest] = argv;
  if (!command || command === '-h' || command === '--help' || command === 'help') {
    process.stdout.write(USAGE);
    return command ? 0 : 2;
  }
  const run = Object.hasOwn(COMMANDS, command) ? COMMANDS[command] : undefined;
  if (!run) {
    process.stderr.write(`mcp-cluster: unknown command "${command}"\n\n${USAGE}`);
    return 2;
  }
  return run(rest);
}

main(process.argv.slice(2)).then(
  (code) => {
    // A long-running role is serving; it exits on SIGTERM/SIGINT.
    if (code !== SERVING) process.exit(code);
  },
  (err: unknown) => {
    if (err instanceof ClusterError) {
      process.stderr.write(`mcp-cluster: ${err.code}: ${err.message}\n`);
      process.exit(err.code === 'INVALID_CONFIG' ? 2 : 1);
    }
    const sys = err as NodeJS.ErrnoException & { address?: string; port?: number };
    if (sys?.syscall === 'listen' && (sys.code === 'EADDRINUSE' || sys.code === 'EACCES')) {
      // A busy or privileged port is a configuration problem, not a crash: no stack trace.
      process.stderr.write(
        `mcp-cluster: INVALID_CONFIG: cannot listen on ${sys.address ?? ''}:${sys.port ?? ''}: ${sys.code === 'EADDRINUSE' ? 'address already in use' : 'permission denied'} (choose a free port)\n`,
      );
      process.exit(2);
    }
    process.stderr.write(`mcp-cluster: ${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  },
);
