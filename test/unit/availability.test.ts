import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { Availability, type PauseReason } from '../../node/render/availability.js'
import { parseSleepWindow } from '../../node/options.js'

/**
 * The sleep schedule of `farmesh start --sleep HH:MM-HH:MM`, with an
 * injected clock: no timers run (check() is called by hand), and the input
 * device directory points at an empty one, so only the schedule decides.
 */
const empty = mkdtempSync(join(tmpdir(), 'farmesh-availability-'))
afterAll(() => { rmSync(empty, { recursive: true, force: true }) })

/** local wall-clock time on an arbitrary day */
const at = (hh: number, mm: number): Date => new Date(2026, 2, 14, hh, mm, 30)

function schedule (sleep: string[]): { a: Availability, set: (hh: number, mm: number) => Promise<PauseReason | undefined>, changes: Array<PauseReason | undefined>, handBacks: () => number } {
  let now = at(12, 0)
  const a = new Availability({ sleep, now: () => now, inputDir: empty })
  const changes: Array<PauseReason | undefined> = []
  let handBacks = 0
  a.on('change', (r) => { changes.push(r) })
  a.on('handBack', () => { handBacks++ })
  return {
    a,
    changes,
    handBacks: () => handBacks,
    set: async (hh, mm) => { now = at(hh, mm); await a.check(); return a.paused() }
  }
}

describe('sleep schedule', () => {
  it('pauses inside a daytime window and is available outside it', async () => {
    const { set } = schedule(['09:00-18:00'])
    expect(await set(8, 59)).toBeUndefined()
    expect(await set(9, 0)).toBe('asleep') // the start is inside
    expect(await set(12, 30)).toBe('asleep')
    expect(await set(17, 59)).toBe('asleep')
    expect(await set(18, 0)).toBeUndefined() // the end is outside
    expect(await set(23, 0)).toBeUndefined()
  })

  it('handles a window that crosses midnight', async () => {
    const { set } = schedule(['22:00-06:00'])
    expect(await set(21, 59)).toBeUndefined()
    expect(await set(22, 0)).toBe('asleep')
    expect(await set(23, 59)).toBe('asleep')
    expect(await set(0, 0)).toBe('asleep')
    expect(await set(3, 15)).toBe('asleep')
    expect(await set(5, 59)).toBe('asleep')
    expect(await set(6, 0)).toBeUndefined()
    expect(await set(12, 0)).toBeUndefined()
  })

  it('takes several windows, and a window to 24:00', async () => {
    const { set } = schedule(['01:00-02:00', '13:00-14:00', '23:30-24:00'])
    expect(await set(1, 30)).toBe('asleep')
    expect(await set(2, 30)).toBeUndefined()
    expect(await set(13, 0)).toBe('asleep')
    expect(await set(14, 0)).toBeUndefined()
    expect(await set(23, 29)).toBeUndefined()
    expect(await set(23, 45)).toBe('asleep')
    expect(await set(0, 0)).toBeUndefined()
  })

  it('is always available without windows', async () => {
    const { set, changes } = schedule([])
    for (const [h, m] of [[0, 0], [9, 0], [23, 59]] as const) expect(await set(h, m)).toBeUndefined()
    expect(changes).toEqual([])
  })

  it('announces each change once, and lets running frames finish (no hand-back) when it falls asleep', async () => {
    const { set, changes, handBacks } = schedule(['22:00-06:00'])
    await set(21, 0)
    await set(22, 30)
    await set(23, 0)
    await set(7, 0)
    await set(22, 0)
    expect(changes).toEqual(['asleep', undefined, 'asleep'])
    expect(handBacks()).toBe(0)
  })

  it('a lock by hand wins over the schedule, hands frames back, and the schedule applies again after unlocking', async () => {
    const { a, set, changes, handBacks } = schedule(['22:00-06:00'])
    expect(await set(23, 0)).toBe('asleep')
    a.setLocked(true)
    expect(await set(23, 0)).toBe('locked')
    expect(handBacks()).toBe(1)
    a.setLocked(false)
    expect(await set(23, 0)).toBe('asleep')
    expect(await set(8, 0)).toBeUndefined()
    expect(changes).toEqual(['asleep', 'locked', 'asleep', undefined])
  })

  it('parses windows and refuses bad ones', () => {
    expect(parseSleepWindow('09:00-18:00')).toEqual({ from: 540, to: 1080 })
    expect(parseSleepWindow('22:00-6:00')).toEqual({ from: 1320, to: 360 })
    for (const bad of ['9-18', '25:00-26:00', '09:60-10:00', '09:00', '']) expect(() => parseSleepWindow(bad), bad).toThrow(/--sleep/)
  })
})
