import type { HostEntry } from './resource-table.js'

/**
 * The JSON shapes of `farmesh hosts --json` and `farmesh host ID --json`.
 * Scripts rely on these keys: id, hostname, site, slots, renderers, scheduler.
 */
export interface HostSummary {
  id: string
  hostname: string
  site: string
  slots: { total: number, busy: number }
  renderers: Array<{ name: string, version: string }>
  licenses: string[]
  scheduler: boolean
  term: number
  render: boolean
  draining: boolean
  /** why it takes no new frames now: nimby, locked, asleep */
  paused: string | null
  addresses: string[]
  lastSeenMsAgo: number
  uptimeSec: number
}

export function hostSummary (e: HostEntry, schedulerId: string | null, now = Date.now()): HostSummary {
  const a = e.advert
  return {
    id: a.peerId,
    hostname: a.fingerprint.hostname,
    site: a.site,
    slots: { total: a.fingerprint.slots.total, busy: a.fingerprint.slots.busy },
    renderers: a.fingerprint.renderers.map(r => ({ name: r.name, version: r.version })),
    licenses: a.fingerprint.licenses,
    scheduler: a.peerId === schedulerId,
    term: a.term,
    render: a.roles.render,
    draining: a.draining === true,
    paused: a.paused ?? null,
    addresses: a.addresses,
    lastSeenMsAgo: Math.max(0, now - e.lastSeen),
    uptimeSec: Math.round((now - a.startedAt) / 1000)
  }
}

export function hostDetail (e: HostEntry, schedulerId: string | null, now = Date.now()): HostSummary & { fingerprint: HostEntry['advert']['fingerprint'], startedAt: number, roles: HostEntry['advert']['roles'] } {
  return { ...hostSummary(e, schedulerId, now), fingerprint: e.advert.fingerprint, startedAt: e.advert.startedAt, roles: e.advert.roles }
}
