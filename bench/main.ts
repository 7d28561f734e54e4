import { pathToFileURL } from 'node:url';

/**
 * Runs a bench script's `main` when that script is the one node was started with (not when a test or
 * another script imports it), then exits with the code it returns, or with 1 and the error's message on
 * stderr (its stack too with `MCP_CLUSTER_LOG_LEVEL=debug`: most failures here are bad flags).
 */
export function runIfMain(moduleUrl: string, name: string, main: (argv: string[]) => Promise<number>): void {
  const entry = process.argv[1];
  if (!entry || moduleUrl !== pathToFileURL(entry).href) return;
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err: unknown) => {
      const debug = process.env.MCP_CLUSTER_LOG_LEVEL === 'debug';
      const text = err instanceof Error ? ((debug ? err.stack : undefined) ?? err.message) : String(err);
      process.stderr.write(`bench ${name}: ${text}\n`);
      process.exit(1);
    },
  );
}
