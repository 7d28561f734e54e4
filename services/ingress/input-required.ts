import { randomUUID } from 'node:crypto';
import {
  ClusterError,
  INPUT_CAPABILITY,
  INPUT_METHODS,
  type InputMethod,
  type InputRequest,
} from '../core/index.js';
import type { ToolResultText } from './call-registry.js';
import type { RequestStates } from './request-state.js';

// Multi-round-trip input at the ingress: a worker's `InputRequiredResult` is checked, its state
// signed, and answered to a 2026-07-28 caller as it is; a 2025-era caller in a session is asked
// by the ingress itself (server-to-client requests on the call's stream, see ClientRequests),
// and the tool runs again with the answers.

/**
 * Checks a worker's `InputRequiredResult` and signs its state: every request uses an input method,
 * every one is covered by the caller's declared capabilities when they are known (else
 * MISSING_CLIENT_CAPABILITY, MCP -32021), and `requestState` becomes the signed state binding the
 * tool's own state to the tool and the caller (minted even when the tool returned none, so a
 * round's answers always come back bound). Throws INTERNAL for a result that asks for nothing or
 * with a method MCP does not have.
 */
export async function checkedInputRequired(
  text: ToolResultText,
  tool: string,
  principal: string,
  capabilities: Record<string, unknown> | undefined,
  states: RequestStates,
): Promise<ToolResultText> {
  const result = JSON.parse(text.json) as Record<string, unknown>;
  const asked = result.inputRequests ?? {};
  if (!isObject(asked) || !Object.values(asked).every(isInputRequest)) {
    throw new ClusterError(
      'INTERNAL',
      `tool ${tool} asked for input with a request that is not one of ${INPUT_METHODS.join(', ')} with params`,
    );
  }
  const requests = asked as Record<string, InputRequest>;
  const state = typeof result.requestState === 'string' ? result.requestState : undefined;
  if (Object.keys(requests).length === 0 && state === undefined)
    throw new ClusterError(
      'INTERNAL',
      `tool ${tool} asked for input but named no input request and no state`,
    );
  if (capabilities) {
    const missing: Record<string, object> = {};
    for (const request of Object.values(requests)) {
      const capability = INPUT_CAPABILITY[request.method];
      if (!isObject(capabilities[capability])) missing[capability] = {};
    }
    const names = Object.keys(missing);
    if (names.length > 0) {
      throw new ClusterError(
        'MISSING_CLIENT_CAPABILITY',
        `tool ${tool} needs input this client did not declare it can give (${names.join(', ')}); declare it in _meta["io.modelcontextprotocol/clientCapabilities"] to use this tool`,
        { data: { requiredCapabilities: missing } },
      );
    }
  }
  const requestState = await states.mint(tool, principal, state);
  return {
    json: JSON.stringify({ ...result, requestState }),
    isError: false,
    inputRequired: true,
    asks: { requests, state },
  };
}

/** How long a 2025-era client has to answer one input request, in ms (a person may be filling a form). */
export const CLIENT_ANSWER_TIMEOUT_MS = 10 * 60_000;
/** Rounds of input one call may ask for on a 2025-era session before it is given up. */
export const MAX_INPUT_ROUNDS = 8;
/** Input requests a replica waits on at once, across its sessions; more are refused (each holds a stream). */
const MAX_PENDING = 10_000;

/** A client's answer to one server-to-client request: its `result`, or its JSON-RPC `error`. */
export type ClientAnswer = { result: unknown } | { error: { code: number; message: string } };

/**
 * Server-to-client requests of 2025-era sessions waiting for their answers: the ingress writes an
 * `elicitation/create`, `sampling/createMessage` or `roots/list` request on a call's response
 * stream, and the client POSTs the answer as a JSON-RPC response with its session id, to this
 * replica or (through the broker's cancel bus) to another. Request ids are random, so an answer
 * names one pending request of one session; an answer for none is dropped.
 */
export class ClientRequests {
  private readonly pending = new Map<string, (answer: ClientAnswer) => void>();

  /**
   * Writes one request with `write` (its JSON-RPC text) and resolves with the client's answer.
   * Rejects with CANCELLED when `signal` aborts, DEADLINE_EXCEEDED after `timeoutMs`.
   */
  ask(
    sessionId: string,
    request: InputRequest,
    write: (message: string) => void,
    signal: AbortSignal,
    timeoutMs = CLIENT_ANSWER_TIMEOUT_MS,
  ): Promise<ClientAnswer> {
    if (this.pending.size >= MAX_PENDING)
      return Promise.reject(
        new ClusterError('OVERLOADED', 'too many input requests are waiting for answers'),
      );
    const id = `mcp-cluster-input-${randomUUID()}`;
    const key = keyOf(sessionId, JSON.stringify(id));
    return new Promise<ClientAnswer>((resolve, reject) => {
      const done = () => {
        this.pending.delete(key);
        clearTimeout(timer);
        signal.removeEventListener('abort', onAbort);
      };
      const onAbort = () => {
        done();
        reject(new ClusterError('CANCELLED', 'the caller went away before answering'));
      };
      const timer = setTimeout(() => {
        done();
        reject(
          new ClusterError(
            'DEADLINE_EXCEEDED',
            `the client did not answer ${request.method} within ${timeoutMs / 1000} s`,
          ),
        );
      }, timeoutMs);
      timer.unref();
      if (signal.aborted) return onAbort();
      signal.addEventListener('abort', onAbort, { once: true });
      this.pending.set(key, (answer) => {
        done();
        resolve(answer);
      });
      write(JSON.stringify({ jsonrpc: '2.0', id, method: request.method, params: request.params }));
    });
  }

  /**
   * Hands a client's answer to the request waiting for it; false when none here waits for
   * `(sessionId, requestIdJson)` (another replica may). `answerJson` is the JSON-RPC response's
   * `result` or `error` member as `{"result":...}` or `{"error":...}`.
   */
  answer(sessionId: string, requestIdJson: string, answerJson: string): boolean {
    const settle = this.pending.get(keyOf(sessionId, requestIdJson));
    if (!settle) return false;
    const parsed = parseAnswer(answerJson);
    settle(
      parsed ?? {
        error: { code: -32603, message: 'the client answered with neither a result nor an error' },
      },
    );
    return true;
  }

  /** Requests waiting for answers. */
  get size(): number {
    return this.pending.size;
  }
}

/**
 * The JSON-RPC responses in a POSTed body (one, or a batch of only responses), each as its id in
 * JSON form and its answer (`{"result":...}` / `{"error":...}`); undefined when the body holds
 * anything else (a request or notification), which the MCP handler then serves.
 */
export function clientResponsesOf(
  parsed: unknown,
): { requestIdJson: string; answerJson: string }[] | undefined {
  const messages = Array.isArray(parsed) ? parsed : [parsed];
  if (messages.length === 0) return undefined;
  const responses: { requestIdJson: string; answerJson: string }[] = [];
  for (const m of messages) {
    if (!isObject(m) || 'method' in m || !('id' in m)) return undefined;
    if (typeof m.id !== 'string' && typeof m.id !== 'number') return undefined;
    if ('result' in m)
      responses.push({
        requestIdJson: JSON.stringify(m.id),
        answerJson: JSON.stringify({ result: m.result }),
      });
    else if (isObject(m.error))
      responses.push({ requestIdJson: JSON.stringify(m.id), answerJson: JSON.stringify({ error: m.error }) });
    else return undefined;
  }
  return responses;
}

function parseAnswer(json: string): ClientAnswer | undefined {
  try {
    const value: unknown = JSON.parse(json);
    if (!isObject(value)) return undefined;
    if ('result' in value) return { result: value.result };
    if (isObject(value.error)) {
      const { code, message } = value.error;
      return {
        error: {
          code: typeof code === 'number' ? code : -32603,
          message: typeof message === 'string' ? message.slice(0, 500) : 'the client refused the request',
        },
      };
    }
    return undefined;
  } catch {
    return undefined;
  }
}

function keyOf(sessionId: string, requestIdJson: string): string {
  return `${sessionId}\u0000${requestIdJson}`;
}

function isInputRequest(value: unknown): value is InputRequest {
  return (
    isObject(value) &&
    (INPUT_METHODS as readonly string[]).includes(value.method as InputMethod) &&
    isObject(value.params)
  );
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
