/**
 * The composition root as a library: what the `mcp-cluster` command (main.ts) wires together,
 * for the tests and benchmarks that start roles in their own process. It chooses the broker
 * implementation by URL scheme, the delivery transport, and registers the tool families.
 */

export { brokerScheme, openBroker, openJobStore } from './brokers.js';
export { brokerFor, deliveryFor } from './compose.js';
export { families } from './families.js';
export type { CommandRow, FlagRow } from './reference.js';
export { cliReference, FLAG_HELP } from './reference.js';
