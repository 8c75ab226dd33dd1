import { describe, expect, it } from 'vitest'
import { planDispatch, type PlannerHost } from '../../node/scheduler/dispatch-planner.js'
import { fingerprint, job } from './fixtures.js'

const host = (id: string, free: number, over: Parameters<typeof fingerprint>[0] = { hostname: id }): PlannerHost => ({ id, free, fingerprint: fingerprint(over) })

describe('dispatch planner', () => {
  it('serves the most urgent job first and prefers faster hosts', () => {
    const a = job('jaaaa', { priority: 50 })
    const b = job('jbbbb', { priority: 10 })
    const plan = planDispatch([b, a].map(x => ({ job: x.job, queued: x.tasks })), [
      host('slow', 1, { hostname: 'slow', cpu: { count: 8, family: 'x', model: 'x', speedMHz: 1000 } }),
      host('fast', 1, { hostname: 'fast', cpu: { count: 8, family: 'x', model: 'x', speedMHz: 4000 } })
    ])
    expect(plan.map(p => [p.task.jobId, p.host])).toEqual([['jbbbb', 'fast'], ['jbbbb', 'slow']])
  })

  it('never gives a job\'s frames to hosts that do not match (don\'t care for fields not named)', () => {
    const j = job('jcccc', { requirements: ['license=nuke'] })
    const plan = planDispatch([{ job: j.job, queued: j.tasks }], [host('h1', 4), host('h2', 4, { hostname: 'h2', licenses: ['nuke'] })])
    expect(new Set(plan.map(p => p.host))).toEqual(new Set(['h2']))
  })

  it('keeps a licensed job within its limit', () => {
    const j = job('jdddd', { uses: ['lic'] }, 10)
    const plan = planDispatch([{ job: j.job, queued: j.tasks }], [host('h1', 4), host('h2', 4), host('h3', 4)], { limitsFree: new Map([['lic', 2]]) })
    expect(plan).toHaveLength(2)
  })

  it('honours allow and deny lists and the machine limit', () => {
    const allow = job('jeeee', { hosts: ['render-*'] }, 8)
    const hosts = [host('p1', 4, { hostname: 'render-1' }), host('p2', 4, { hostname: 'render-2' }), host('p3', 4, { hostname: 'ws-artist' })]
    expect(new Set(planDispatch([{ job: allow.job, queued: allow.tasks }], hosts).map(p => p.host))).toEqual(new Set(['p1', 'p2']))
    const deny = job('jffff', { denyHosts: ['ws-*'] }, 8)
    expect(planDispatch([{ job: deny.job, queued: deny.tasks }], hosts).some(p => p.host === 'p3')).toBe(false)
    const limited = job('jgggg', { maxHosts: 1 }, 8)
    expect(new Set(planDispatch([{ job: limited.job, queued: limited.tasks }], hosts).map(p => p.host)).size).toBe(1)
  })

  it('chooses only hosts with the declared memory free', () => {
    const j = job('jhhhh', { memory: '20G' }, 4)
    const plan = planDispatch([{ job: j.job, queued: j.tasks }], [host('small', 4), host('big', 4, { hostname: 'big', ram: { total: 64 * 2 ** 30, free: 40 * 2 ** 30 } })])
    expect(new Set(plan.map(p => p.host))).toEqual(new Set(['big']))
  })

  it('shares slots within one priority by fair-share weight, not FIFO', () => {
    const big = job('jbig1', { user: 'alice' }, 100)
    const small = job('jsmal', { user: 'bob' }, 100)
    const plan = planDispatch([big, small].map(x => ({ job: x.job, queued: x.tasks })), [host('h1', 6), host('h2', 6)], { weight: k => (k === 'alice' ? 2 : 1) })
    const alice = plan.filter(p => p.task.jobId === 'jbig1').length
    const bob = plan.filter(p => p.task.jobId === 'jsmal').length
    expect(alice + bob).toBe(12)
    expect(alice).toBe(8)
    expect(bob).toBe(4)
  })

  it('sends a retried frame to a host it has not failed on', () => {
    const j = job('jiiii', {}, 1)
    j.tasks[0].triedHosts = ['fast']
    const plan = planDispatch([{ job: j.job, queued: j.tasks }], [
      host('fast', 1, { hostname: 'fast', cpu: { count: 8, family: 'x', model: 'x', speedMHz: 4000 } }),
      host('slow', 1, { hostname: 'slow', cpu: { count: 8, family: 'x', model: 'x', speedMHz: 1000 } })
    ])
    expect(plan[0].host).toBe('slow')
  })
})
