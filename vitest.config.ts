import { defineConfig } from 'vitest/config'

// Integration tests start real node processes in network namespaces: they
// need generous timeouts, and separate worker processes (forks) so the
// harness's teardown hooks see signals.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    pool: 'forks',
    testTimeout: 120_000,
    hookTimeout: 120_000,
    reporters: ['default']
  }
})
