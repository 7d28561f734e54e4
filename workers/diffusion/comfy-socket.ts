import WebSocket from 'ws';
import { ClusterError } from '../../services/core/index.js';
import type { AdapterContext } from '../runtime/index.js';

// ComfyUI's `/ws` WebSocket, where a prompt's progress, results and errors are announced.

/** One message from ComfyUI's `/ws`: JSON `{type, data}`, or a binary frame (previews). */
export type SocketMessage =
  | { kind: 'json'; type: string; data: Record<string, unknown> }
  | { kind: 'binary' };

/** A `/ws` connection that buffers messages from the moment it opens. */
export class ComfySocket {
  private readonly buffered: SocketMessage[] = [];
  private wake: (() => void) | undefined;
  /** Why the connection ended, once it did. */
  private ended: ClusterError | undefined;

  private constructor(
    private readonly ws: WebSocket,
    base: string,
  ) {
    ws.on('message', (data, isBinary) => {
      if (isBinary) {
        this.buffered.push({ kind: 'binary' });
      } else {
        let parsed: unknown;
        try {
          parsed = JSON.parse(data.toString());
        } catch {
          parsed = undefined;
        }
        const message = parsed as { type?: unknown; data?: unknown } | undefined;
        if (typeof message?.type !== 'string') {
          this.ended ??= new ClusterError(
            'BACKEND_PROTOCOL',
            `ComfyUI at ${base} sent a WebSocket message that is not {type, data} JSON: ${data.toString().slice(0, 80)}`,
          );
          ws.terminate();
        } else {
          const body = typeof message.data === 'object' && message.data !== null ? message.data : {};
          this.buffered.push({ kind: 'json', type: message.type, data: body as Record<string, unknown> });
        }
      }
      this.wake?.();
    });
    ws.on('close', (code, reason) => {
      this.ended ??= new ClusterError(
        'BACKEND_UNAVAILABLE',
        `ComfyUI at ${base} closed the WebSocket (code ${code}${reason.length ? `: ${reason.toString()}` : ''})`,
      );
      this.wake?.();
    });
    ws.on('error', (err) => {
      this.ended ??= new ClusterError(
        'BACKEND_UNAVAILABLE',
        `ComfyUI at ${base} WebSocket failed: ${err.message}`,
        {
          cause: err,
        },
      );
      this.wake?.();
    });
  }

  /** Connects to `/ws?clientId=…`; rejects with BACKEND_UNAVAILABLE, BACKEND_PROTOCOL or CANCELLED. */
  static open(base: string, clientId: string, ctx: AdapterContext): Promise<ComfySocket> {
    const url = new URL(`ws?clientId=${encodeURIComponent(clientId)}`, base);
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url, { handshakeTimeout: ctx.backendTimeoutMs, perMessageDeflate: false });
      const socket = new ComfySocket(ws, base);
      let settled = false;
      const settle = (err?: ClusterError) => {
        if (settled) return;
        settled = true;
        ctx.signal.removeEventListener('abort', onAbort);
        if (err) {
          ws.terminate();
          reject(err);
        } else resolve(socket);
      };
      const onAbort = () => settle(new ClusterError('CANCELLED', 'the call was cancelled'));
      ctx.signal.addEventListener('abort', onAbort, { once: true });
      ws.once('open', () => settle());
      ws.once('unexpected-response', (req, res) => {
        req.destroy();
        const status = res.statusCode ?? 0;
        settle(
          status >= 500 || status === 429
            ? new ClusterError(
                'BACKEND_UNAVAILABLE',
                `ComfyUI at ${base} answered ${status} to the WebSocket /ws`,
              )
            : new ClusterError(
                'BACKEND_PROTOCOL',
                `${base} answered ${status} to the WebSocket /ws: is the pool's endpoint a ComfyUI server?`,
              ),
        );
      });
      ws.once('error', (err: Error & { code?: string }) =>
        settle(
          new ClusterError(
            'BACKEND_UNAVAILABLE',
            `ComfyUI at ${base} is unreachable: ${err.code ?? err.message}`,
            { cause: err },
          ),
        ),
      );
      if (ctx.signal.aborted) onAbort();
    });
  }

  /**
   * The next message, or 'idle' when none came within `timeoutMs`. Throws the reason the
   * connection ended once every buffered message was read, or CANCELLED when `signal` aborts.
   */
  async next(timeoutMs: number, signal: AbortSignal): Promise<SocketMessage | 'idle'> {
    for (;;) {
      if (signal.aborted) throw new ClusterError('CANCELLED', 'the call was cancelled');
      const message = this.buffered.shift();
      if (message) return message;
      if (this.ended) throw this.ended;
      const woke = await new Promise<boolean>((resolve) => {
        const timer = setTimeout(() => done(false), Math.max(0, timeoutMs));
        const onAbort = () => done(true);
        const done = (value: boolean) => {
          clearTimeout(timer);
          signal.removeEventListener('abort', onAbort);
          this.wake = undefined;
          resolve(value);
        };
        this.wake = () => done(true);
        signal.addEventListener('abort', onAbort, { once: true });
      });
      if (!woke && !signal.aborted && this.buffered.length === 0 && !this.ended) return 'idle';
    }
  }

  close(): void {
    this.ended ??= new ClusterError('INTERNAL', 'closed');
    if (this.ws.readyState === WebSocket.OPEN) this.ws.close(1000);
    else this.ws.terminate();
  }
}
