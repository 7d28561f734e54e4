import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

// What the bench's own server entry files (direct-server, peer-server) share.

/** Whether the module at `moduleUrl` is the script node was started with. */
export function isMain(moduleUrl: string): boolean {
  return process.argv[1] !== undefined && moduleUrl === pathToFileURL(process.argv[1]).href;
}

/**
 * Closes the server on SIGTERM/SIGINT, and also when stdin ends if `withStdin` (the bench that
 * started it keeps stdin open as a pipe: when the bench dies, even by SIGKILL, the pipe closes and
 * the server goes with it). Exits at most 3 s after the stop began.
 */
export function exitWith(close: () => Promise<void>, withStdin: boolean): void {
  let closing = false;
  const stop = () => {
    if (closing) return;
    closing = true;
    setTimeout(() => process.exit(0), 3000).unref();
    close().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
  if (withStdin) {
    process.stdin.on('end', stop);
    process.stdin.on('close', stop);
    process.stdin.resume();
  }
}

/** Runs an entry's main, turning a failure into a message on stderr and exit code 1. */
export function runMain(name: string, main: () => Promise<void>): void {
  main().catch((err: unknown) => {
    process.stderr.write(`${name}: ${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  });
}

/** A bench server as its entry file starts it. */
export interface EntryServer {
  url: string;
  close(): Promise<void>;
}

/**
 * The command line of a bench server entry: `--port N --backend URL [--host H] [--exit-with-stdin]`.
 * Starts the server with `start`, prints one JSON ready line `{role, url, pid}` and stops it on
 * signals (and stdin's end when asked).
 */
export function serveFromArgs(
  role: string,
  start: (options: { backendUrl: string; port: number; host?: string }) => Promise<EntryServer>,
): void {
  runMain(`${role}-server`, async () => {
    const { values } = parseArgs({
      options: {
        port: { type: 'string', default: '0' },
        backend: { type: 'string' },
        host: { type: 'string' },
        'exit-with-stdin': { type: 'boolean', default: false },
      },
      strict: true,
    });
    if (!values.backend) throw new Error(`${role}-server needs --backend URL`);
    const server = await start({
      backendUrl: values.backend,
      port: Number(values.port),
      ...(values.host ? { host: values.host } : {}),
    });
    exitWith(() => server.close(), values['exit-with-stdin']);
    process.stdout.write(`${JSON.stringify({ role, url: server.url, pid: process.pid })}\n`);
  });
}
