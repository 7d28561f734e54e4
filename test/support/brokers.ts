// The brokers the suites spawn (nats-server, redis-server) and their helpers. The implementation
// lives in bench/systems/brokers.ts, shared with the benchmarks; see its header for why there.
export {
  type BrokerStartOptions,
  freePort,
  type SpawnedBroker,
  startBrokerServer,
  startNatsServer,
  startRedisServer,
  uniqueNamespace,
} from '../../bench/systems/brokers.js';
