import { describe, expect, it } from 'vitest'
import { netnsSupported } from '../harness/netns.js'
import { runFaultScenario } from '../harness/fault-injector.js'

/**
 * The long randomized fault run (issue 4), for `npm run soak`: the same
 * scenario as the short one in test/integration/fault-tolerance.test.ts,
 * for FARMESH_SOAK_MS (default 10 minutes) and several seeds, printing the
 * failover, requeue and rendered-twice figures over all of them.
 */
const median = (xs: number[]): number => { const s = [...xs].sort((a, b) => a - b); return s.length === 0 ? NaN : s[Math.floor(s.length / 2)] }

describe.skipIf(!netnsSupported())('long randomized fault run', () => {
  it('loses nothing over many seeded faults', async () => {
    const total = Number(process.env.FARMESH_SOAK_MS ?? 600_000)
    const perRun = Math.min(total, 150_000)
    const first = Number(process.env.FARMESH_FAULT_SEED ?? Math.floor(Math.random() * 2 ** 31))
    const failover: number[] = []
    const requeue: number[] = []
    let twice = 0
    let frames = 0
    const violations: string[] = []
    for (let i = 0, spent = 0; spent < total; i++, spent += perRun) {
      const seed = first + i
      console.log(`soak run ${i + 1}: seed ${seed} (reproduce with FARMESH_FAULT_SEED=${seed})`)
      const r = await runFaultScenario({ seed, hosts: 5, frames: 200, durationMs: perRun, log: (l) => { console.log(`  ${l}`) } })
      failover.push(...r.failoverTimesMs)
      requeue.push(...r.requeueTimesMs)
      twice += r.framesRenderedTwice
      frames += r.totalFrames
      violations.push(...r.violations.map(v => `seed ${seed}: ${String(v)}`))
    }
    console.log(`failover: median ${median(failover)} ms, max ${Math.max(...failover)} ms over ${failover.length} kills`)
    console.log(`requeue: median ${median(requeue)} ms, max ${Math.max(...requeue)} ms over ${requeue.length} deaths`)
    console.log(`frames rendered twice: ${twice} of ${frames} (${(100 * twice / Math.max(1, frames)).toFixed(1)} %)`)
    expect(violations).toEqual([])
  }, 24 * 3600_000)
})
