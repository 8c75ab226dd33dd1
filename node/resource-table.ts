import { EventEmitter } from 'node:events'
import type { Advert } from '../protocols/advert.js'

/**
 * The site's resource database (the patent's FIGURES 3 and 8), kept by every
 * node from the adverts it receives. There is no resource server: a node that
 * restarts rebuilds its table from the adverts its peers push on connect.
 *
 * A host leaves the table at once when it says so (`leaving`) or its last
 * connection closes, and otherwise when it has been silent for `timeoutMs`.
 */
export const HEARTBEAT_MS = 2_000
export const HOST_TIMEOUT_MS = 5_000

export interface HostEntry {
  advert: Advert
  lastSeen: number
}

export interface ResourceTableEvents {
  change: [reason: 'join' | 'update' | 'leave', peerId: string]
}

export class ResourceTable extends EventEmitter<ResourceTableEvents> {
  private readonly hosts = new Map<string, HostEntry>()

  constructor (private readonly opts: { timeoutMs?: number, now?: () => number } = {}) {
    super()
  }

  private now (): number { return (this.opts.now ?? Date.now)() }

  /** Apply an advert; stale ones (older boot or lower seq) are ignored. */
  apply (advert: Advert): void {
    if (advert.leaving) { this.remove(advert.peerId); return }
    const old = this.hosts.get(advert.peerId)
    if (old != null && old.advert.bootId === advert.bootId && old.advert.seq > advert.seq) return
    if (old != null && old.advert.bootId !== advert.bootId && old.advert.startedAt > advert.startedAt) return
    this.hosts.set(advert.peerId, { advert, lastSeen: this.now() })
    const changed = old == null || old.advert.seq !== advert.seq || old.advert.bootId !== advert.bootId
    if (changed) this.emit('change', old == null ? 'join' : 'update', advert.peerId)
  }

  remove (peerId: string): void {
    if (this.hosts.delete(peerId)) this.emit('change', 'leave', peerId)
  }

  /** Drop hosts silent for longer than the timeout; `keep` is never expired (ourselves). */
  expire (keep?: string): void {
    const limit = this.now() - (this.opts.timeoutMs ?? HOST_TIMEOUT_MS)
    for (const [id, entry] of this.hosts) {
      if (id !== keep && entry.lastSeen < limit) this.remove(id)
    }
  }

  get (peerId: string): HostEntry | undefined { return this.hosts.get(peerId) }
  has (peerId: string): boolean { return this.hosts.has(peerId) }
  entries (): HostEntry[] { return [...this.hosts.values()] }
  get size (): number { return this.hosts.size }
}
