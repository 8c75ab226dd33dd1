import { randomBytes } from 'node:crypto'
import type { Libp2p } from '@libp2p/interface'
import { ADVERT_PROTOCOL, receiveAdvert, sendAdvert, type Advert } from '../protocols/advert.js'
import { HEARTBEAT_MS, type ResourceTable } from './resource-table.js'
import type { SiteMembership } from './site-membership.js'
import type { Fingerprint } from './fingerprint-types.js'
import type { Logger } from './logger.js'

/**
 * Keeps this node's advert and pushes it: to a member the moment it joins, to
 * everyone the moment something changes (slot taken or freed, renderer
 * installed), and to everyone every HEARTBEAT_MS so that a host that goes
 * silent expires from the others' tables.
 */
export interface AdvertiserInit {
  libp2p: Libp2p
  membership: SiteMembership
  table: ResourceTable
  log: Logger
  site: string
  fingerprint: Fingerprint
  roles: Advert['roles']
  /** called with the member addresses a peer knows of (peer exchange) */
  onKnown?: (addresses: string[]) => void
}

export class Advertiser {
  private advert: Advert
  private timer?: NodeJS.Timeout

  constructor (private readonly c: AdvertiserInit) {
    this.advert = {
      peerId: c.libp2p.peerId.toString(),
      site: c.site,
      bootId: randomBytes(8).toString('hex'),
      seq: 0,
      startedAt: Date.now(),
      addresses: [],
      roles: c.roles,
      fingerprint: c.fingerprint,
      leaving: false,
      term: 0
    }
  }

  async start (): Promise<void> {
    await this.c.membership.handle(ADVERT_PROTOCOL, async (stream, connection) => {
      const advert = await receiveAdvert(stream)
      // a member speaks only for itself, and only for our site
      if (advert.peerId !== connection.remotePeer.toString() || advert.site !== this.c.site) return
      this.c.table.apply(advert)
      if (advert.known != null && advert.known.length > 0) this.c.onKnown?.(advert.known)
    })
    this.c.membership.on('join', (peer) => { void this.pushTo(peer) })
    this.c.membership.on('leave', (peer) => { this.c.table.remove(peer) })
    this.update({})
    this.timer = setInterval(() => {
      this.c.table.expire(this.advert.peerId)
      this.refreshSelf()
      this.pushAll()
    }, HEARTBEAT_MS)
  }

  current (): Advert { return this.advert }

  /** Change our advert and tell the site at once. */
  update (change: Partial<Pick<Advert, 'fingerprint' | 'roles' | 'term' | 'claim' | 'draining' | 'paused'>>): void {
    this.advert = { ...this.advert, ...change, seq: this.advert.seq + 1, addresses: this.addresses(), known: this.known() }
    this.c.table.apply(this.advert)
    this.pushAll()
  }

  setSlotsBusy (busy: number): void {
    const fp = this.advert.fingerprint
    if (fp.slots.busy === busy) return
    this.update({ fingerprint: { ...fp, slots: { ...fp.slots, busy } } })
  }

  /** Our own entry never expires while we run; keep its lastSeen fresh. */
  private refreshSelf (): void {
    this.advert = { ...this.advert, known: this.known() }
    this.c.table.apply(this.advert)
  }

  /**
   * One address of each member we know, for peers that do not know them yet:
   * not a loopback one (addresses[0] is usually /ip4/127.0.0.1/…, which on
   * another host reaches that host itself) unless it is all the member has.
   */
  private known (): string[] {
    const self = this.advert?.peerId
    return this.c.table.entries().filter(e => e.advert.peerId !== self).map(e => e.advert.addresses.find(a => !isLoopback(a)) ?? e.advert.addresses[0]).filter((a): a is string => a != null).slice(0, 256)
  }

  private addresses (): string[] {
    return this.c.libp2p.getMultiaddrs().map(a => a.toString())
  }

  private pushAll (): void {
    for (const peer of this.c.membership.list()) void this.pushTo(peer)
  }

  private async pushTo (peer: string, advert = this.advert): Promise<void> {
    const conn = this.c.libp2p.getConnections().find(c => c.remotePeer.toString() === peer && c.status === 'open')
    if (conn == null) return
    try {
      await sendAdvert(conn, advert)
    } catch (err: any) {
      this.c.log.debug(`advert to ${peer} failed: ${err.message}`)
    }
  }

  /** Clean stop: every member drops us from its table at once. */
  async leave (): Promise<void> {
    if (this.timer != null) clearInterval(this.timer)
    const last: Advert = { ...this.advert, seq: this.advert.seq + 1, leaving: true }
    await Promise.allSettled(this.c.membership.list().map(async peer => { await this.pushTo(peer, last) }))
  }

  stop (): void {
    if (this.timer != null) clearInterval(this.timer)
  }
}

function isLoopback (addr: string): boolean {
  return addr.startsWith('/ip4/127.') || addr.startsWith('/ip6/::1/')
}
