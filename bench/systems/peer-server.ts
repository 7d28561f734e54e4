import { FastMCP, type Logger } from 'fastmcp';
import { z } from 'zod';
import type { ToolConfig } from '../../services/core/index.js';
import { freePort } from '../../test/support/process-guard.js';
import { embedSettings } from '../../workers/embeddings/index.js';
import { inferenceSettings } from '../../workers/inference/index.js';
import { benchConfig } from './config.js';
import { isMain, serveFromArgs } from './entry.js';
import { localTools } from './local-tools.js';

// The `peer` system: the same two tools served by FastMCP (Streamable HTTP, stateless), the
// framework an MCP author would reach for, calling the backend with the same adapters as direct
// and the cluster's workers, so what differs is the serving layer alone. Arguments are checked
// by FastMCP against zod schemas with the catalog's limits.
//
//   node dist/bench/systems/peer-server.js --port 0 --backend http://127.0.0.1:8000
//
// prints one JSON line `{"role":"peer","url":"http://127.0.0.1:<port>/mcp","pid":N}` once it
// listens, and exits on SIGTERM/SIGINT (and, with --exit-with-stdin, when its stdin closes).

/** A running peer server. */
export interface PeerServer {
  readonly url: string;
  close(): Promise<void>;
}

/** FastMCP logs to the console (stdout) by default; the ready line owns stdout, so only problems go to stderr. */
const quietLogger: Logger = {
  debug: () => {},
  info: () => {},
  log: () => {},
  warn: (...args: unknown[]) => process.stderr.write(`${args.map(String).join(' ')}\n`),
  error: (...args: unknown[]) => process.stderr.write(`${args.map(String).join(' ')}\n`),
};

/** Starts FastMCP on `host:port` (0: a free port) against `backendUrl`. */
export async function startPeerServer(options: {
  backendUrl: string;
  port?: number;
  host?: string;
}): Promise<PeerServer> {
  const host = options.host ?? '127.0.0.1';
  const config = benchConfig({ backendUrl: options.backendUrl });
  const tools = localTools(config);
  const generate = tools.config('generate_text') as ToolConfig;
  const embed = tools.config('embed') as ToolConfig;
  const generateLimits = inferenceSettings.of(generate);
  const embedLimits = embedSettings.of(embed);
  const describe = (name: string) => tools.definitions.find((t) => t.name === name)?.description ?? name;

  const server = new FastMCP({
    name: 'bench-peer',
    version: '0.1.0',
    logger: quietLogger,
    ping: { enabled: false },
    roots: { enabled: false },
  });

  server.addTool({
    name: 'generate_text',
    description: describe('generate_text'),
    parameters: z.strictObject({
      prompt: z.string().min(1).max(generateLimits.maxTextLength).describe('The prompt to complete.'),
      max_tokens: z
        .number()
        .int()
        .min(1)
        .max(generateLimits.maxTokens)
        .default(Math.min(256, generateLimits.maxTokens))
        .describe(`Most tokens to generate (1-${generateLimits.maxTokens}).`),
      temperature: z.number().min(0).max(2).default(0.7).describe('Sampling temperature (0-2).'),
      system: z.string().max(generateLimits.maxTextLength).optional().describe('Optional system prompt.'),
    }),
    timeoutMs: generate.deadlineMs,
    execute: async (args, context) =>
      (await tools.run('generate_text', args, {
        signal: context.signal,
        sessionKey: context.sessionId ?? '',
        onProgress: (p) => {
          context.reportProgress(p).catch(() => undefined);
        },
      })) as never,
  });

  server.addTool({
    name: 'embed',
    description: describe('embed'),
    parameters: z.strictObject({
      texts: z
        .array(z.string().min(1).max(embedLimits.maxTextLength))
        .min(1)
        .max(embedLimits.maxTexts)
        .describe(`Texts to embed (1-${embedLimits.maxTexts}).`),
      model: z.string().min(1).optional().describe(`Embedding model; default ${embed.model}.`),
      normalize: z.boolean().default(true).describe('Scale each vector to unit length.'),
    }),
    outputSchema: z.object({
      model: z.string(),
      dimensions: z.number().int().min(0),
      vectors: z.array(z.array(z.number())),
    }),
    timeoutMs: embed.deadlineMs,
    execute: async (args, context) =>
      (await tools.run('embed', args, {
        signal: context.signal,
        sessionKey: context.sessionId ?? '',
      })) as never,
  });

  // FastMCP does not report the port it bound, so port 0 means: pick a free one, and retry if
  // another process took it in between.
  let port = options.port ?? 0;
  for (let attempt = 1; ; attempt++) {
    const chosen = port || (await freePort());
    try {
      await server.start({
        transportType: 'httpStream',
        httpStream: { port: chosen, host, endpoint: '/mcp', stateless: true },
      });
      port = chosen;
      break;
    } catch (err) {
      const busy = (err as NodeJS.ErrnoException).code === 'EADDRINUSE';
      if (!busy || port !== 0 || attempt >= 5) throw err;
    }
  }
  return {
    url: `http://${host}:${port}/mcp`,
    close: () => server.stop(),
  };
}

if (isMain(import.meta.url)) serveFromArgs('peer', startPeerServer);
