import { readFileSync } from 'node:fs';
import {
  Client as ClientV2,
  StreamableHTTPClientTransport as TransportV2,
} from '@modelcontextprotocol/client';
import { Client as ClientV1 } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport as TransportV1 } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { CreateMessageRequestSchema, ElicitRequestSchema } from '@modelcontextprotocol/sdk/types.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type ConformanceCluster, startConformanceCluster } from './support/cluster.js';
import { post2025, post2026 } from './support/mcp-clients.js';

// Multi-round-trip input across processes on NATS JetStream: two ingress replicas sharing one
// session secret, one worker of the `conformance` pool, the fixtures that ask for input. A
// 2026-07-28 caller answers an `InputRequiredResult` at any replica (raw HTTP and the official v2
// client, which fulfils it itself); a 2025-era session is asked by the ingress on the call's
// stream (the official v1 client), its answer routed over the broker when it reaches the other
// replica. Signed state, missing capabilities and hostile continuations are refused.

const CATALOG = readFileSync(new URL('../deploy/conformance/catalog.yaml', import.meta.url), 'utf8');
const CAPABILITIES = { elicitation: {}, sampling: {}, roots: {} };

const call = (
  url: string,
  tool: string,
  extra: Record<string, unknown> = {},
  capabilities: Record<string, unknown> = CAPABILITIES,
) => post2026(url, 'tools/call', { name: tool, arguments: {}, ...extra }, { capabilities });

const textOf = (result: Record<string, unknown> | undefined): string =>
  ((result?.content as { text: string }[] | undefined)?.[0]?.text ?? '') as string;

describe('multi-round-trip input across processes (two ingress replicas, NATS JetStream)', () => {
  let cluster: ConformanceCluster;
  let a: string;
  let b: string;

  beforeAll(async () => {
    cluster = await startConformanceCluster({ name: 'input', ingresses: 2, catalog: CATALOG });
    [a, b] = cluster.urls as [string, string];
  });
  afterAll(async () => {
    await cluster?.stop();
  });

  describe('2026-07-28: InputRequiredResult', () => {
    it('asks at one replica and finishes at the other with the answers and the signed state', async () => {
      const first = await call(a, 'test_input_required_result_elicitation');
      expect(first.status).toBe(200);
      const asked = first.body.result as Record<string, unknown>;
      expect(asked.resultType).toBe('input_required');
      expect(asked.inputRequests).toEqual({
        user_name: {
          method: 'elicitation/create',
          params: expect.objectContaining({ message: 'What is your name?' }),
        },
      });
      expect(typeof asked.requestState).toBe('string');
      const done = await call(b, 'test_input_required_result_elicitation', {
        inputResponses: { user_name: { action: 'accept', content: { name: 'Alice' } } },
        requestState: asked.requestState,
      });
      expect(done.body.result?.resultType).toBe('complete');
      expect(textOf(done.body.result)).toBe('Hello, Alice!');
    });

    it("carries the tool's own state through three rounds, each at another replica", async () => {
      const tool = 'test_input_required_result_multi_round';
      const r1 = (await call(a, tool)).body.result as Record<string, unknown>;
      expect(Object.keys(r1.inputRequests as object)).toEqual(['step1']);
      const r2 = (
        await call(b, tool, {
          inputResponses: { step1: { action: 'accept', content: { name: 'Alice' } } },
          requestState: r1.requestState,
        })
      ).body.result as Record<string, unknown>;
      expect(Object.keys(r2.inputRequests as object)).toEqual(['step2']);
      expect(r2.requestState).not.toBe(r1.requestState);
      const r3 = await call(a, tool, {
        inputResponses: { step2: { action: 'accept', content: { color: 'blue' } } },
        requestState: r2.requestState,
      });
      expect(textOf(r3.body.result)).toBe('Alice likes blue.');
    });

    it('refuses a changed, foreign or garbage requestState with -32602 and runs nothing', async () => {
      const asked = (await call(a, 'test_input_required_result_request_state')).body.result as Record<
        string,
        unknown
      >;
      const state = String(asked.requestState);
      const answers = { confirm: { action: 'accept', content: { ok: true } } };
      const ok = await call(b, 'test_input_required_result_request_state', {
        inputResponses: answers,
        requestState: state,
      });
      expect(textOf(ok.body.result)).toBe('state-ok: confirmed');
      // One character changed in the signed payload.
      const flipped = `${state.slice(0, 10)}${state[10] === 'A' ? 'B' : 'A'}${state.slice(11)}`;
      for (const bad of [`${state}-TAMPERED`, flipped, 'v1.e30.AAAA', 'x'.repeat(50_000)]) {
        const refused = await call(b, 'test_input_required_result_request_state', {
          inputResponses: answers,
          requestState: bad,
        });
        expect(refused.status).toBeLessThan(500);
        expect(refused.body.error?.code).toBe(-32602);
      }
      // A genuine state minted for another tool names that tool: refused here.
      const foreign = await call(b, 'test_input_required_result_tampered_state', {
        inputResponses: answers,
        requestState: state,
      });
      expect(foreign.body.error).toMatchObject({ code: -32602, data: { code: 'INVALID_REQUEST_STATE' } });
      expect(foreign.body.error?.message).toMatch(/another tool or caller/);
    });

    it('answers -32021 with HTTP 400 when the tool needs input the caller did not declare', async () => {
      const refused = await call(a, 'test_missing_capability', {}, {});
      expect(refused.status).toBe(400);
      expect(refused.body.error).toMatchObject({
        code: -32021,
        data: { requiredCapabilities: { sampling: {} } },
      });
      const asked = await call(a, 'test_missing_capability', {}, { sampling: {} });
      expect(asked.body.result?.resultType).toBe('input_required');
      // The tool itself asks only for what the caller declared.
      const samplingOnly = await call(b, 'test_input_required_result_capabilities', {}, { sampling: {} });
      const methods = Object.values(
        samplingOnly.body.result?.inputRequests as Record<string, { method: string }>,
      ).map((r) => r.method);
      expect(methods).toEqual(['sampling/createMessage']);
    });

    it('keeps hostile inputResponses away from the tool with a usable error, or asks again', async () => {
      for (const inputResponses of [
        [1, 2],
        'text',
        { user_name: 'not an object' },
        { wrong_key: { action: 'accept' } },
      ]) {
        const answer = await call(b, 'test_input_required_result_elicitation', { inputResponses });
        expect(answer.status).toBeLessThan(500);
        if (answer.body.error) expect(answer.body.error.code).toBe(-32602);
        else expect(answer.body.result?.resultType).toBe('input_required');
      }
    });

    it('asks for a left-out prompt argument with an elicitation, then renders the prompt', async () => {
      const prompt = 'test_input_required_result_prompt';
      const asked = await post2026(a, 'prompts/get', { name: prompt }, { capabilities: CAPABILITIES });
      const requests = asked.body.result?.inputRequests as Record<
        string,
        { method: string; params: { requestedSchema: object } }
      >;
      const [key, request] = Object.entries(requests)[0] ?? [];
      expect(request?.method).toBe('elicitation/create');
      expect(request?.params.requestedSchema).toMatchObject({ properties: { context: { type: 'string' } } });
      const got = await post2026(
        b,
        'prompts/get',
        {
          name: prompt,
          inputResponses: { [String(key)]: { action: 'accept', content: { context: 'GPU pools' } } },
        },
        { capabilities: CAPABILITIES },
      );
      expect(got.body.result?.messages).toEqual([
        { role: 'user', content: { type: 'text', text: 'Write a short note about GPU pools.' } },
      ]);
      // A caller that cannot be asked is told what is missing.
      const refused = await post2026(a, 'prompts/get', { name: prompt }, { capabilities: {} });
      expect(refused.body.error?.code).toBe(-32602);
      expect(refused.body.error?.message).toMatch(/needs argument "context"/);
    });

    it('is fulfilled by the official v2 client from its own handlers', async () => {
      const client = new ClientV2(
        { name: 'input-test-v2', version: '1.0.0' },
        { capabilities: CAPABILITIES, versionNegotiation: { mode: { pin: '2026-07-28' } } },
      );
      const asked: string[] = [];
      client.setRequestHandler('elicitation/create', async (request) => {
        asked.push(`elicit ${(request.params as { message: string }).message}`);
        return { action: 'accept', content: { name: 'Bob' } };
      });
      client.setRequestHandler('sampling/createMessage', async () => {
        asked.push('sample');
        return {
          role: 'assistant',
          content: { type: 'text', text: 'Hi Bob' },
          model: 'm',
          stopReason: 'endTurn',
        };
      });
      client.setRequestHandler('roots/list', async () => {
        asked.push('roots');
        return { roots: [{ uri: 'file:///work', name: 'work' }] };
      });
      await client.connect(new TransportV2(new URL(a)));
      try {
        const result = await client.callTool({
          name: 'test_input_required_result_multiple_inputs',
          arguments: {},
        });
        expect((result.content as { text: string }[])[0]?.text).toBe(
          'Bob; the model said: Hi Bob; roots: file:///work',
        );
        expect(asked.sort()).toEqual(['elicit What is your name?', 'roots', 'sample']);
      } finally {
        await client.close();
      }
    });
  });

  describe('2025-era sessions: the ingress asks the client on the call stream', () => {
    /** A v1 client whose answers to the ingress's requests go to `answersTo` (another replica). */
    async function v1Client(answersTo?: string) {
      const client = new ClientV1(
        { name: 'input-test-v1', version: '1.0.0' },
        { capabilities: CAPABILITIES },
      );
      const routed = { count: 0 };
      const fetchVia: typeof fetch = async (input, init) => {
        const body = typeof init?.body === 'string' ? init.body : '';
        // A JSON-RPC response (no method) is the client's answer to a server request.
        if (answersTo && body.includes('"result"') && !body.includes('"method"')) {
          routed.count += 1;
          return fetch(answersTo, init);
        }
        return fetch(input, init);
      };
      await client.connect(new TransportV1(new URL(a), { fetch: fetchVia }));
      return { client, routed };
    }

    it('elicits through the v1 client and hands the answer to the tool', async () => {
      const { client } = await v1Client();
      try {
        let seen: { message?: string; requestedSchema?: { required?: string[] } } = {};
        client.setRequestHandler(ElicitRequestSchema, async (request) => {
          seen = request.params as typeof seen;
          return { action: 'accept', content: { username: 'ada', email: 'ada@example.com' } };
        });
        const result = await client.callTool({
          name: 'test_elicitation',
          arguments: { message: 'Who are you?' },
        });
        expect(seen.message).toBe('Who are you?');
        expect(seen.requestedSchema?.required).toEqual(['username', 'email']);
        expect((result.content as { text: string }[])[0]?.text).toBe(
          'User response: action=accept, content={"username":"ada","email":"ada@example.com"}',
        );
      } finally {
        await client.close();
      }
    });

    it('takes the answer at the other replica (over the broker) and finishes the call', async () => {
      const { client, routed } = await v1Client(b);
      try {
        client.setRequestHandler(CreateMessageRequestSchema, async () => ({
          role: 'assistant',
          content: { type: 'text', text: 'Paris' },
          model: 'm',
        }));
        const result = await client.callTool({
          name: 'test_sampling',
          arguments: { prompt: 'Capital of France?' },
        });
        expect(routed.count).toBe(1);
        expect((result.content as { text: string }[])[0]?.text).toBe('LLM response: Paris');
      } finally {
        await client.close();
      }
    });

    it('ends the call with a tool error naming the refusal when the client refuses', async () => {
      const client = new ClientV1({ name: 'input-test-v1-bare', version: '1.0.0' });
      await client.connect(new TransportV1(new URL(a)));
      try {
        // No sampling handler: the v1 client answers the request with method not found.
        const result = await client.callTool({ name: 'test_sampling', arguments: { prompt: 'Hi' } });
        expect(result.isError).toBe(true);
        expect((result.content as { text: string }[])[0]?.text).toMatch(
          /the client refused sampling\/createMessage/,
        );
      } finally {
        await client.close();
      }
    });

    it('tells a session-less 2025 caller to initialize, and drops answers that name nothing', async () => {
      const res = await post2025(a, {
        jsonrpc: '2.0',
        id: 7,
        method: 'tools/call',
        params: { name: 'test_sampling', arguments: { prompt: 'Hi' } },
      });
      const text = await res.text();
      expect(res.status).toBe(200);
      expect(text).toMatch(/must initialize a session/);
      for (const stray of [
        { jsonrpc: '2.0', id: 'mcp-cluster-input-nothing', result: {} },
        [{ jsonrpc: '2.0', id: 3, error: { code: -1, message: 'no' } }],
      ]) {
        const answer = await post2025(b, stray);
        expect(answer.status).toBe(202);
      }
    });
  });
});
