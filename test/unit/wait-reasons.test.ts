import { describe, expect, it } from 'vitest'
import { waitingReason, type WaitFacts } from '../../node/scheduler/wait-reasons.js'
import { job } from './fixtures.js'

const base = (over: Partial<WaitFacts> = {}): WaitFacts => ({
  job: job('jwait').job, dependencies: [], startable: 4, hosts: [{ id: 'h', hostname: 'h', allowed: true, free: 0 }], limits: [], hostsInUse: 0, jobsAhead: 0, sharingWith: [], ...over
})

describe('why is my job idle?', () => {
  it('names the cause', () => {
    expect(waitingReason(base({ job: { ...job('jw1').job, held: true } }))).toMatch(/held/)
    expect(waitingReason(base({ dependencies: [{ id: 'jparent', state: 'active', frameLevel: false }] }))).toMatch(/waiting for job jparent \(active\)/)
    expect(waitingReason(base({ startable: 0, dependencies: [{ id: 'jrend', state: 'active', frameLevel: true }] }))).toMatch(/same frames of job jrend/)
    expect(waitingReason(base({ hosts: [{ id: 'h', hostname: 'h', allowed: false, free: 4 }] }))).toMatch(/no host/)
    expect(waitingReason(base({ hosts: [{ id: 'h', hostname: 'h', allowed: true, free: 4, paused: 'nimby' }] }))).toMatch(/unavailable \(nimby\)/)
    expect(waitingReason(base({ hosts: [{ id: 'h', hostname: 'h', allowed: true, free: 4 }], limits: [{ name: 'nuke', count: 2, inUse: 2 }] }))).toMatch(/limit nuke: 2 of 2/)
    expect(waitingReason(base({ jobsAhead: 3 }))).toMatch(/3 more urgent/)
    expect(waitingReason(base({ sharingWith: ['alice'] }))).toMatch(/fair share/)
  })
})
