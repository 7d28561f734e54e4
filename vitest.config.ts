import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    // The benchmark harness's own tests live beside it, so the suites under test/ never import bench/.
    include: ['test/**/*.test.ts', 'bench/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // End-to-end suites spawn brokers and several node processes; on a 2-core machine
    // running them side by side only makes them slower and flakier.
    fileParallelism: false,
    pool: 'forks',
  },
});
