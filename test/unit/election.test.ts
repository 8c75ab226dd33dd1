import { describe, expect, it } from 'vitest'
import { Election } from '../../node/scheduler/election.js'
import { ResourceTable } from '../../node/resource-table.js'
import type { Advert } from '../../protocols/advert.js'
import { fingerprint } from './fixtures.js'

function advert (peerId: string, over: Partial<Advert> = {}): Advert {
  return { peerId, site: 's', bootId: 'b', seq: 1, startedAt: 1000, addresses: [], roles: { render: true, schedule: true }, fingerprint: fingerprint({ hostname: peerId }), leaving: false, term: 0, ...over }
}

function election (self: string, table: ResourceTable, now: () => number, term = 0): { e: Election, claims: Array<[boolean, number]> } {
  const claims: Array<[boolean, number]> = []
  const e = new Election({ self, table, term, startedAt: 1000, canSchedule: true, now, persistTerm: async () => {}, advertise: (c, t) => { claims.push([c, t]); table.apply(advert(self, { claim: c, term: t, seq: (table.get(self)?.advert.seq ?? 0) + 1, startedAt: table.get(self)?.advert.startedAt ?? 1000 })) } })
  return { e, claims }
}

describe('scheduler election', () => {
  it('the longest-running eligible host claims a new term once its grace period is over', async () => {
    const table = new ResourceTable()
    table.apply(advert('a', { startedAt: 500 }))
    table.apply(advert('b', { startedAt: 1000 }))
    let now = 1000 + 1000
    const a = election('a', table, () => now)
    await a.e.evaluate()
    expect(a.claims).toEqual([]) // still in its grace period
    now = 1000 + 5000
    await a.e.evaluate()
    expect(a.claims).toEqual([[true, 1]])
    expect(a.e.isLeader()).toBe(true)
    const b = election('b', table, () => now)
    await b.e.evaluate()
    expect(b.e.leader()).toBe('a')
    expect(b.claims).toEqual([])
  })

  it('a claimant steps down for a higher term, and old terms are fenced', async () => {
    const table = new ResourceTable()
    const now = (): number => 100_000
    table.apply(advert('a', { startedAt: 500 }))
    const a = election('a', table, now)
    await a.e.evaluate()
    expect(a.e.isLeader()).toBe(true)
    table.apply(advert('z', { claim: true, term: 7 }))
    await a.e.evaluate()
    expect(a.e.isLeader()).toBe(false)
    expect(a.e.leader()).toBe('z')
    expect(a.e.accepts(6)).toBe(false)
    expect(a.e.accepts(7)).toBe(true)
  })

  it('a live scheduler is not displaced by a better candidate that joins', async () => {
    const table = new ResourceTable()
    const now = (): number => 100_000
    table.apply(advert('m', { claim: true, term: 3, startedAt: 5000 }))
    table.apply(advert('a', { startedAt: 1 })) // older, would win a fresh election
    const a = election('a', table, now)
    await a.e.evaluate()
    expect(a.e.leader()).toBe('m')
    expect(a.claims).toEqual([])
    table.remove('m') // the scheduler dies: the best candidate takes over with a higher term
    await a.e.evaluate()
    expect(a.claims).toEqual([[true, 4]])
  })
})
