import { type ComfySim, comfySimMain, parseSimArgs, startSimBackend } from '../../../workers/sim/index.js';
import { ClusterError, createLogger, exitOnSignals } from '../../core/index.js';
import { type ExitCode, SERVING } from '../args.js';
import { help } from '../usage.js';

const log = createLogger('cli');

/**
 * `mcp-cluster sim [--kind vllm|comfyui] ...`: a simulated GPU backend. The flags after `--kind` are
 * the simulator's own, so they are parsed by it rather than here.
 */
export async function sim(args: string[]): Promise<ExitCode> {
  if (args.includes('--help') || args.includes('-h')) return help();
  const kindAt = args.indexOf('--kind');
  const kind = kindAt >= 0 ? args[kindAt + 1] : 'vllm';
  if (kind !== 'vllm' && kind !== 'comfyui') {
    throw new ClusterError('INVALID_CONFIG', `--kind must be vllm or comfyui, got "${kind ?? ''}"`);
  }
  const rest = kindAt >= 0 ? [...args.slice(0, kindAt), ...args.slice(kindAt + 2)] : args;
  if (kind === 'comfyui') {
    let comfy: ComfySim;
    try {
      comfy = await comfySimMain(rest);
    } catch (err) {
      if (err instanceof ClusterError) throw err;
      throw new ClusterError('INVALID_CONFIG', (err as Error).message, { cause: err });
    }
    exitOnSignals([{ state: 'running', shutdown: () => comfy.close() }], (err) =>
      log.error('shutdown failed', { err }),
    );
    return SERVING;
  }
  let options: ReturnType<typeof parseSimArgs>;
  try {
    options = parseSimArgs(rest);
  } catch (err) {
    throw new ClusterError('INVALID_CONFIG', (err as Error).message, { cause: err });
  }
  const backend = await startSimBackend(options);
  exitOnSignals([{ state: 'running', shutdown: () => backend.close() }], (err) =>
    log.error('shutdown failed', { err }),
  );
  process.stdout.write(`${JSON.stringify({ role: 'sim', kind: 'vllm', url: backend.url })}\n`);
  return SERVING;
}
