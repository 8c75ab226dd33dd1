import { readdir, stat } from 'node:fs/promises'
import { loadavg } from 'node:os'
import { EventEmitter } from 'node:events'
import type { WorkstationOptions } from '../options.js'
import { parseSleepWindow } from '../options.js'

/**
 * Whether this host takes new frames now, and why not: its user is at the
 * workstation (NIMBY, "not in my back yard"), it was locked by hand, or its
 * sleep schedule says so. A workstation stops taking frames the moment
 * activity is seen (keyboard or mouse through /dev/input, a configured
 * activity file, or a load threshold), hands its running frames back after
 * the grace period, and takes frames again after the idle time.
 */
export type PauseReason = 'nimby' | 'locked' | 'asleep'

const CHECK_MS = 1_000

export interface AvailabilityInit {
  workstation?: WorkstationOptions
  sleep: string[]
  now?: () => Date
  /** where input devices are: their timestamps move with every key press or mouse move */
  inputDir?: string
}

export class Availability extends EventEmitter<{ change: [PauseReason | undefined], handBack: [] }> {
  private timer?: NodeJS.Timeout
  private lastActivity = 0
  private activeSince?: number
  private handedBack = false
  private locked = false
  private current?: PauseReason
  private readonly windows: Array<{ from: number, to: number }>
  private lastSeen = new Map<string, number>()

  constructor (private readonly init: AvailabilityInit) {
    super()
    this.windows = init.sleep.map(parseSleepWindow)
  }

  start (): void {
    this.timer = setInterval(() => { void this.check() }, CHECK_MS)
    this.timer.unref()
    void this.check()
  }

  stop (): void { if (this.timer != null) clearInterval(this.timer) }

  paused (): PauseReason | undefined { return this.current }

  /** `farmesh nimby on|off`: a person locks or unlocks their host by hand. */
  setLocked (locked: boolean): void {
    this.locked = locked
    void this.check()
  }

  isLocked (): boolean { return this.locked }

  private asleep (): boolean {
    const d = (this.init.now ?? (() => new Date()))()
    const m = d.getHours() * 60 + d.getMinutes()
    return this.windows.some(w => w.from <= w.to ? (m >= w.from && m < w.to) : (m >= w.from || m < w.to))
  }

  /** Any sign of the user since the last check? */
  private async activitySeen (): Promise<boolean> {
    const ws = this.init.workstation
    if (ws == null) return false
    let seen = false
    const files: string[] = []
    if (ws.activityFile != null) files.push(ws.activityFile)
    const inputDir = this.init.inputDir ?? '/dev/input'
    for (const n of await readdir(inputDir).catch(() => [] as string[])) if (n.startsWith('event') || n === 'mice') files.push(`${inputDir}/${n}`)
    for (const f of files) {
      const st = await stat(f).catch(() => undefined)
      if (st == null) continue
      const t = Math.max(st.mtimeMs, st.atimeMs)
      const prev = this.lastSeen.get(f)
      this.lastSeen.set(f, t)
      if (prev != null && t > prev) seen = true
    }
    if (ws.loadThreshold != null && loadavg()[0] > ws.loadThreshold) seen = true
    return seen
  }

  async check (): Promise<void> {
    const now = Date.now()
    const ws = this.init.workstation
    if (await this.activitySeen()) {
      this.lastActivity = now
      this.activeSince ??= now
    }
    let reason: PauseReason | undefined
    if (this.locked) reason = 'locked'
    else if (ws != null && this.lastActivity > 0 && now - this.lastActivity < ws.idleAfterSec * 1000) reason = 'nimby'
    else if (this.asleep()) reason = 'asleep'
    if (reason !== 'nimby') this.activeSince = undefined
    if (reason == null || reason === 'asleep') this.handedBack = false
    // running frames go back to the queue once the grace period has passed (at once when locked by hand)
    const due = reason === 'locked' || (reason === 'nimby' && ws != null && this.activeSince != null && now - this.activeSince >= ws.graceSec * 1000)
    if (due && !this.handedBack) {
      this.handedBack = true
      this.emit('handBack')
    }
    if (reason !== this.current) {
      this.current = reason
      this.emit('change', reason)
    }
  }
}
