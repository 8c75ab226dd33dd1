import { describe, expect, it } from 'vitest'
import { jobWins, taskWins } from '../../node/scheduler/replica-merge.js'
import { job } from './fixtures.js'

describe('replica merge', () => {
  const t = job('jmerg').tasks[0]
  it('keeps a done frame done against a newer non-done copy of the same generation', () => {
    expect(taskWins({ ...t, state: 'done', ver: { term: 1, n: 5 } }, { ...t, state: 'queued', ver: { term: 2, n: 1 } })).toBe(false)
    expect(taskWins({ ...t, state: 'running', ver: { term: 3, n: 9 } }, { ...t, state: 'done', ver: { term: 1, n: 1 } })).toBe(true)
  })
  it('takes the newer term, then the newer counter', () => {
    expect(taskWins({ ...t, state: 'running', ver: { term: 1, n: 9 } }, { ...t, state: 'queued', ver: { term: 2, n: 1 } })).toBe(true)
    expect(taskWins({ ...t, state: 'running', ver: { term: 2, n: 9 } }, { ...t, state: 'queued', ver: { term: 2, n: 3 } })).toBe(false)
  })
  it('lets a retry (new generation) reopen a done frame', () => {
    expect(taskWins({ ...t, state: 'done', gen: 0 }, { ...t, state: 'queued', gen: 1 })).toBe(true)
  })
  it('keeps a finished job finished within its generation', () => {
    const j = job('jmer2').job
    expect(jobWins({ ...j, state: 'killed', ver: { term: 1, n: 1 } }, { ...j, state: 'active', ver: { term: 5, n: 1 } })).toBe(false)
    expect(jobWins({ ...j, state: 'killed', gen: 1 }, { ...j, state: 'queued', gen: 2 })).toBe(true)
  })
})
