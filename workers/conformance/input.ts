/**
 * The conformance fixtures that ask their caller for input: MCP multi-round-trip input
 * (`InputRequiredResult`, 2026-07-28) and, through the ingress, elicitation and sampling for
 * 2025-era sessions. Each runs again from the start with the caller's answers
 * (`ctx.input.responses`) and the state it returned (`ctx.input.state`), possibly on another
 * worker: nothing is kept between rounds but that state.
 */

import {
  type InputRequest,
  type InputRequiredResult,
  inputRequired,
  type JsonSchema,
} from '../../services/core/index.js';
import type { AdapterContext, InputToolAdapter, ToolResult } from '../runtime/index.js';

type Answer = ToolResult | InputRequiredResult;

const text = (value: string): ToolResult => ({ content: [{ type: 'text', text: value }] });

/** An `elicitation/create` request for a form of string fields, all required. */
function elicit(message: string, fields: Record<string, string>): InputRequest {
  return {
    method: 'elicitation/create',
    params: {
      message,
      requestedSchema: {
        type: 'object',
        properties: Object.fromEntries(
          Object.entries(fields).map(([name, description]) => [name, { type: 'string', description }]),
        ),
        required: Object.keys(fields),
      },
    },
  };
}

/** A `sampling/createMessage` request asking the caller's model one question. */
function sample(question: string): InputRequest {
  return {
    method: 'sampling/createMessage',
    params: { messages: [{ role: 'user', content: { type: 'text', text: question } }], maxTokens: 100 },
  };
}

const LIST_ROOTS: InputRequest = { method: 'roots/list', params: {} };

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * The form content of an accepted `ElicitResult` answering `key`, when each of `fields` is a
 * string in it; undefined when the answer is missing, malformed, declined or incomplete (asked again).
 */
function accepted(ctx: AdapterContext, key: string, fields: string[]): Record<string, string> | undefined {
  const answer = ctx.input?.responses[key];
  if (!isObject(answer) || answer.action !== 'accept' || !isObject(answer.content)) return undefined;
  const content = answer.content;
  if (!fields.every((f) => typeof content[f] === 'string')) return undefined;
  return content as Record<string, string>;
}

/** The text of a `CreateMessageResult` answering `key`; undefined when missing or not text. */
function sampled(ctx: AdapterContext, key: string): string | undefined {
  const answer = ctx.input?.responses[key];
  if (!isObject(answer) || !isObject(answer.content)) return undefined;
  return answer.content.type === 'text' && typeof answer.content.text === 'string'
    ? answer.content.text
    : undefined;
}

/** The root URIs of a `ListRootsResult` answering `key`; undefined when missing or malformed. */
function rootsOf(ctx: AdapterContext, key: string): string[] | undefined {
  const answer = ctx.input?.responses[key];
  if (!isObject(answer) || !Array.isArray(answer.roots)) return undefined;
  const uris = answer.roots.map((r) => (isObject(r) && typeof r.uri === 'string' ? r.uri : undefined));
  return uris.every((u) => u !== undefined) ? (uris as string[]) : undefined;
}

/** The outcome of a 2025-style elicitation, as the suite's fixtures describe it. */
function elicitationOutcome(ctx: AdapterContext, key: string, prefix: string): ToolResult | undefined {
  const answer = ctx.input?.responses[key];
  if (!isObject(answer) || typeof answer.action !== 'string') return undefined;
  return text(`${prefix}: action=${answer.action}, content=${JSON.stringify(answer.content ?? {})}`);
}

const NAME = elicit('What is your name?', { name: 'Your name' });

const adapter = (run: (ctx: AdapterContext) => Answer): InputToolAdapter => ({
  run: async (ctx) => run(ctx),
});

/** Asks for a name, then greets it. */
const GREET = adapter((ctx) => {
  const form = accepted(ctx, 'user_name', ['name']);
  return form ? text(`Hello, ${form.name}!`) : inputRequired({ user_name: NAME });
});

/** Asks the caller's model `question` under `key` (sampling), then returns its answer. */
function askModel(key: string, question: string): InputToolAdapter {
  return adapter((ctx) => {
    const answer = sampled(ctx, key);
    return answer !== undefined
      ? text(`The model answered: ${answer}`)
      : inputRequired({ [key]: sample(question) });
  });
}

/** Asks for a confirmation with a state of its own; answers `reply` once both come back. */
function confirmed(reply: string): InputToolAdapter {
  return adapter((ctx) => {
    if (acceptedAny(ctx, 'confirm') && ctx.input?.state === 'awaiting-confirmation') return text(reply);
    return inputRequired({ confirm: elicit('Please confirm', { ok: 'Anything' }) }, 'awaiting-confirmation');
  });
}

/** Fixture tools by name: what each asks for and how it answers once it has it. */
export const INPUT_FIXTURES: Record<
  string,
  { description: string; input?: JsonSchema; adapter: InputToolAdapter }
> = {
  test_input_required_result_elicitation: {
    description: 'Conformance fixture: asks the caller for a name (elicitation), then greets it.',
    adapter: GREET,
  },
  test_streaming_elicitation: {
    description:
      'Conformance fixture: asks the caller for a name (elicitation) in its result, never on the stream.',
    adapter: GREET,
  },
  test_input_required_result_sampling: {
    description:
      "Conformance fixture: asks the caller's model a question (sampling), then returns its answer.",
    adapter: askModel('capital_question', 'What is the capital of France?'),
  },
  test_input_required_result_list_roots: {
    description: "Conformance fixture: asks for the caller's roots, then lists them.",
    adapter: adapter((ctx) => {
      const roots = rootsOf(ctx, 'client_roots');
      return roots ? text(`Client roots: ${roots.join(', ')}`) : inputRequired({ client_roots: LIST_ROOTS });
    }),
  },
  test_input_required_result_request_state: {
    description: 'Conformance fixture: asks for a confirmation and checks the state it returned comes back.',
    adapter: confirmed('state-ok: confirmed'),
  },
  test_input_required_result_tampered_state: {
    description: 'Conformance fixture: like the request-state fixture; a changed state never reaches it.',
    adapter: confirmed('state-ok'),
  },
  test_input_required_result_multiple_inputs: {
    description: 'Conformance fixture: asks for a name, a model answer and the roots at once.',
    adapter: adapter((ctx) => {
      const form = accepted(ctx, 'user_name', ['name']);
      const answer = sampled(ctx, 'greeting');
      const roots = rootsOf(ctx, 'client_roots');
      if (form && answer !== undefined && roots && ctx.input?.state === 'all-three')
        return text(`${form.name}; the model said: ${answer}; roots: ${roots.join(', ')}`);
      return inputRequired(
        { user_name: NAME, greeting: sample('Say hello.'), client_roots: LIST_ROOTS },
        'all-three',
      );
    }),
  },
  test_input_required_result_multi_round: {
    description: 'Conformance fixture: asks for a name, then (a second round) for a colour.',
    adapter: adapter((ctx) => {
      const state = ctx.input?.state;
      if (state?.startsWith('round-2:')) {
        const form = accepted(ctx, 'step2', ['color']);
        const name = state.slice('round-2:'.length);
        if (form) return text(`${name} likes ${form.color}.`);
        return inputRequired(
          { step2: elicit('Step 2: What is your favorite color?', { color: 'A colour' }) },
          state,
        );
      }
      const form = state === 'round-1' ? accepted(ctx, 'step1', ['name']) : undefined;
      if (form)
        return inputRequired(
          { step2: elicit('Step 2: What is your favorite color?', { color: 'A colour' }) },
          `round-2:${form.name}`,
        );
      return inputRequired({ step1: elicit('Step 1: What is your name?', { name: 'Your name' }) }, 'round-1');
    }),
  },
  test_input_required_result_capabilities: {
    description: 'Conformance fixture: asks only for the input the caller declared it can give.',
    adapter: adapter((ctx) => {
      if (ctx.input && Object.keys(ctx.input.responses).length > 0) return text('Thanks for the input.');
      const requests: Record<string, InputRequest> = {};
      if (ctx.input?.canAsk('elicitation/create') !== false) requests.user_name = NAME;
      if (ctx.input?.canAsk('sampling/createMessage') !== false) requests.greeting = sample('Say hello.');
      if (Object.keys(requests).length === 0)
        return text('Nothing to ask: the caller declared neither elicitation nor sampling.');
      return inputRequired(requests);
    }),
  },
  test_missing_capability: {
    description: "Conformance fixture: needs the caller's model (sampling) whatever the caller declared.",
    adapter: askModel('question', 'What is 2 + 2?'),
  },
  test_sampling: {
    description:
      "Conformance fixture: sends the prompt to the caller's model (sampling) and returns its answer.",
    input: {
      type: 'object',
      properties: { prompt: { type: 'string', description: 'The prompt to send to the model' } },
      required: ['prompt'],
    },
    adapter: adapter((ctx) => {
      const answer = sampled(ctx, 'llm');
      return answer !== undefined
        ? text(`LLM response: ${answer}`)
        : inputRequired({ llm: sample(String(ctx.arguments.prompt)) });
    }),
  },
  test_elicitation: {
    description: 'Conformance fixture: asks the user for a username and an email (elicitation).',
    input: {
      type: 'object',
      properties: { message: { type: 'string', description: 'The message to show the user' } },
      required: ['message'],
    },
    adapter: adapter(
      (ctx) =>
        elicitationOutcome(ctx, 'user', 'User response') ??
        inputRequired({
          user: elicit(String(ctx.arguments.message), {
            username: "User's response",
            email: "User's email address",
          }),
        }),
    ),
  },
  test_elicitation_sep1034_defaults: {
    description: 'Conformance fixture: an elicitation whose fields all have default values (SEP-1034).',
    adapter: adapter(
      (ctx) =>
        elicitationOutcome(ctx, 'form', 'Elicitation completed') ??
        inputRequired({
          form: {
            method: 'elicitation/create',
            params: {
              message: 'Please review your details',
              requestedSchema: {
                type: 'object',
                properties: {
                  name: { type: 'string', description: 'Your name', default: 'John Doe' },
                  age: { type: 'integer', description: 'Your age', default: 30 },
                  score: { type: 'number', description: 'Your score', default: 95.5 },
                  status: {
                    type: 'string',
                    description: 'Your status',
                    enum: ['active', 'inactive', 'pending'],
                    default: 'active',
                  },
                  verified: { type: 'boolean', description: 'Verified', default: true },
                },
              },
            },
          },
        }),
    ),
  },
  test_elicitation_sep1330_enums: {
    description: 'Conformance fixture: an elicitation with every enum form (SEP-1330).',
    adapter: adapter(
      (ctx) =>
        elicitationOutcome(ctx, 'form', 'Elicitation completed') ??
        inputRequired({
          form: {
            method: 'elicitation/create',
            params: {
              message: 'Pick your options',
              requestedSchema: {
                type: 'object',
                properties: {
                  untitledSingle: { type: 'string', enum: ['option1', 'option2', 'option3'] },
                  titledSingle: {
                    type: 'string',
                    oneOf: [
                      { const: 'value1', title: 'First Option' },
                      { const: 'value2', title: 'Second Option' },
                      { const: 'value3', title: 'Third Option' },
                    ],
                  },
                  legacyEnum: {
                    type: 'string',
                    enum: ['opt1', 'opt2', 'opt3'],
                    enumNames: ['Option One', 'Option Two', 'Option Three'],
                  },
                  untitledMulti: {
                    type: 'array',
                    items: { type: 'string', enum: ['option1', 'option2', 'option3'] },
                  },
                  titledMulti: {
                    type: 'array',
                    items: {
                      anyOf: [
                        { const: 'value1', title: 'First Choice' },
                        { const: 'value2', title: 'Second Choice' },
                        { const: 'value3', title: 'Third Choice' },
                      ],
                    },
                  },
                },
              },
            },
          },
        }),
    ),
  },
};

/** The content of any accepted elicitation answering `key` (whatever its fields). */
function acceptedAny(ctx: AdapterContext, key: string): Record<string, unknown> | undefined {
  const answer = ctx.input?.responses[key];
  return isObject(answer) && answer.action === 'accept' && isObject(answer.content)
    ? answer.content
    : undefined;
}
