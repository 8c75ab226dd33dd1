import { describe, it, expect } from 'vitest'
import { JobQueue } from '../../node/scheduler/job-queue.js'

interface Job { id: string, priority: number, seq: number }

let seq = 0
const job = (id: string, priority: number): Job => ({ id, priority, seq: seq++ })
const ids = (q: JobQueue<Job>): string[] => q.ordered().map(j => j.id)

describe('JobQueue', () => {
  it("inserts a priority-3 job between priority 2 and 5 (the patent's example)", () => {
    const q = new JobQueue<Job>()
    q.insert(job('A', 1))
    q.insert(job('B', 2))
    q.insert(job('C', 5))
    q.insert(job('D', 3))
    expect(ids(q)).toEqual(['A', 'B', 'D', 'C'])
    expect(q.size).toBe(4)
  })

  it('is first-in first-out within a priority', () => {
    const q = new JobQueue<Job>()
    q.insert(job('A', 2))
    q.insert(job('B', 1))
    q.insert(job('C', 2))
    q.insert(job('D', 1))
    q.insert(job('E', 2))
    expect(ids(q)).toEqual(['B', 'D', 'A', 'C', 'E'])
    expect(q.peek()?.id).toBe('B')
  })

  it('orders by seq, not arrival, within a priority', () => {
    const q = new JobQueue<Job>()
    q.insert({ id: 'late', priority: 5, seq: 20 })
    q.insert({ id: 'early', priority: 5, seq: 10 })
    q.insert({ id: 'tie', priority: 5, seq: 20 })
    expect(ids(q)).toEqual(['early', 'late', 'tie'])
    expect(q.remove('tie')?.id).toBe('tie')
    expect(ids(q)).toEqual(['early', 'late'])
  })

  it('gets, removes and reports membership', () => {
    const q = new JobQueue<Job>()
    const a = job('A', 1)
    q.insert(a)
    q.insert(job('B', 1))
    expect(q.get('A')).toBe(a)
    expect(q.has('B')).toBe(true)
    expect(q.remove('A')).toBe(a)
    expect(q.get('A')).toBeUndefined()
    expect(q.has('A')).toBe(false)
    expect(q.remove('A')).toBeUndefined()
    expect(ids(q)).toEqual(['B'])
    expect(q.size).toBe(1)
  })

  it('rejects a duplicate id and a non-numeric priority', () => {
    const q = new JobQueue<Job>()
    q.insert({ id: 'A', priority: 1, seq: 1 })
    expect(() => q.insert({ id: 'A', priority: 2, seq: 2 })).toThrow(/already queued/)
    expect(() => q.insert({ id: 'B', priority: NaN, seq: 2 })).toThrow(RangeError)
    expect(q.size).toBe(1)
  })

  it('reprioritizes: moves the job, keeping its submission order in the new priority', () => {
    const q = new JobQueue<Job>()
    for (const [id, p] of [['A', 1], ['B', 2], ['C', 5], ['D', 5], ['E', 3]] as const) q.insert(job(id, p))
    expect(ids(q)).toEqual(['A', 'B', 'E', 'C', 'D'])

    // D becomes urgent: ahead of everything at priority 0.
    expect(q.reprioritize('D', 0)?.priority).toBe(0)
    expect(ids(q)).toEqual(['D', 'A', 'B', 'E', 'C'])

    // A drops to 5: it was submitted before C, so it goes ahead of C, not behind.
    q.reprioritize('A', 5)
    expect(ids(q)).toEqual(['D', 'B', 'E', 'A', 'C'])

    // E moves into priority 2 after B (submitted earlier).
    q.reprioritize('E', 2)
    expect(ids(q)).toEqual(['D', 'B', 'E', 'A', 'C'])
    expect(q.get('E')?.priority).toBe(2)

    expect(q.reprioritize('nope', 1)).toBeUndefined()
    expect(() => q.reprioritize('A', NaN)).toThrow(RangeError)
    expect(q.size).toBe(5)
  })

  it('ordered() is a copy and the queue is iterable', () => {
    const q = new JobQueue<Job>()
    q.insert(job('A', 1))
    const list = q.ordered()
    list.pop()
    expect(q.size).toBe(1)
    expect([...q].map(j => j.id)).toEqual(['A'])
  })

  it('matches a sort by (priority, seq) under random operations', () => {
    let state = 42
    const rand = (n: number): number => { state = (state * 1103515245 + 12345) % 2 ** 31; return state % n }
    const q = new JobQueue<Job>()
    const model = new Map<string, Job>()
    for (let i = 0; i < 2000; i++) {
      const op = rand(10)
      const keys = [...model.keys()]
      if (op < 5 || keys.length === 0) {
        const j = { id: `j${i}`, priority: rand(8), seq: i }
        q.insert(j)
        model.set(j.id, j)
      } else if (op < 8) {
        const id = keys[rand(keys.length)]
        expect(q.remove(id)?.id).toBe(id)
        model.delete(id)
      } else {
        q.reprioritize(keys[rand(keys.length)], rand(8))
      }
      if (i % 100 === 0) {
        const expected = [...model.values()].sort((a, b) => a.priority - b.priority || a.seq - b.seq).map(j => j.id)
        expect(ids(q)).toEqual(expected)
      }
    }
  })
})
