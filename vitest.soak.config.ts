import { defineConfig } from 'vitest/config'

// `npm run soak`: the long fault-injection run, kept out of `npm test`.
export default defineConfig({
  test: {
    include: ['test/soak/**/*.soak.ts'],
    pool: 'forks',
    fileParallelism: false,
    testTimeout: 24 * 3600_000,
    hookTimeout: 600_000
  }
})
