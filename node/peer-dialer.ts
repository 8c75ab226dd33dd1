import type { Libp2p } from '@libp2p/interface'
import { multiaddr, type Multiaddr } from '@multiformats/multiaddr'
import type { Logger } from './logger.js'
import type { SiteMembership } from './site-membership.js'

/**
 * Keeps this node connected to the hosts it knows of: those mDNS found and
 * the explicit `--peer` addresses (for networks without multicast). libp2p v3
 * does not dial discovered peers by itself, so we do, and we retry explicit
 * peers every RETRY_MS so a host that reboots or a healed partition rejoins.
 */
const RETRY_MS = 3_000
const DIAL_TIMEOUT_MS = 5_000

export class PeerDialer {
  private readonly known = new Map<string, Multiaddr[]>()
  private readonly dialing = new Set<string>()
  private timer?: NodeJS.Timeout

  constructor (private readonly libp2p: Libp2p, private readonly membership: SiteMembership, private readonly log: Logger) {}

  start (explicit: string[]): void {
    for (const text of explicit) {
      const ma = multiaddr(text)
      const peer = ma.getComponents().find(c => c.name === 'p2p')?.value
      if (peer != null) this.add(peer, [ma])
    }
    this.timer = setInterval(() => { for (const peer of this.known.keys()) this.dial(peer) }, RETRY_MS)
    this.timer.unref()
  }

  stop (): void {
    if (this.timer != null) clearInterval(this.timer)
  }

  /** A peer was discovered (mDNS) or named: remember it and connect now. */
  add (peer: string, addrs: Multiaddr[]): void {
    if (peer === this.libp2p.peerId.toString()) return
    this.known.set(peer, addrs)
    this.dial(peer)
  }

  private dial (peer: string): void {
    if (this.dialing.has(peer) || this.membership.isRefused(peer)) return
    if (this.libp2p.getConnections().some(c => c.remotePeer.toString() === peer && c.status === 'open')) return
    const addrs = this.known.get(peer)
    if (addrs == null) return
    this.dialing.add(peer)
    const target = addrs.length === 1 ? addrs[0] : addrs
    this.libp2p.dial(target as any, { signal: AbortSignal.timeout(DIAL_TIMEOUT_MS) })
      .catch((err: any) => { this.log.debug(`dial ${peer} failed: ${err.message}`) })
      .finally(() => { this.dialing.delete(peer) })
  }
}
