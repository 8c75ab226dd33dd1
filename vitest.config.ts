import { defineConfig } from 'vitest/config'

// Integration tests start real node processes in network namespaces and
// measure timeouts of a few seconds: on a 2-core machine, files run one at
// a time so one file's load does not make another's deadlines lie. Separate
// worker processes (forks) let the harness's teardown hooks see signals.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    pool: 'forks',
    fileParallelism: false,
    testTimeout: 180_000,
    hookTimeout: 180_000,
    reporters: ['default']
  }
})
