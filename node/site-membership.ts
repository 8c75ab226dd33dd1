import type { Connection, Libp2p, PeerId, Stream, StreamHandler } from '@libp2p/interface'
import { EventEmitter } from 'node:events'
import { MEMBERSHIP_PROTOCOL, handleMembership, requestMembership, type MembershipInit } from '../protocols/membership.js'
import type { Logger } from './logger.js'

/**
 * Who belongs to this site. A peer becomes a member only through the
 * membership handshake; every other farm protocol is registered through
 * `handle()` here, which aborts a stream from a non-member before reading a
 * byte of it. Connections that fail the handshake are closed, and the peer is
 * remembered for a while so mDNS does not make us dial it again and again.
 */
export const HANDSHAKE_DEADLINE_MS = 5_000
const REFUSED_TTL_MS = 60_000

export class SiteMembership extends EventEmitter<{ join: [string], leave: [string] }> {
  private readonly members = new Set<string>()
  private readonly refused = new Map<string, number>()
  private readonly pending = new Map<string, Promise<boolean>>()
  /** peers of federated sites: they never run the membership handshake, and are not cut off for it */
  private federated: (peer: string) => boolean = () => false

  constructor (private readonly libp2p: Libp2p, private readonly init: MembershipInit, private readonly log: Logger) {
    super()
  }

  async start (): Promise<void> {
    await this.libp2p.handle(MEMBERSHIP_PROTOCOL, async (stream, connection) => {
      await handleMembership(this.init, stream, connection,
        (peer) => { this.admit(peer) },
        (peer, reason) => { this.refuse(peer, reason, connection) })
    })
    this.libp2p.addEventListener('connection:open', (evt) => { this.onConnection(evt.detail) })
    this.libp2p.addEventListener('peer:disconnect', (evt) => {
      const peer = evt.detail.toString()
      if (this.members.delete(peer)) this.emit('leave', peer)
    })
  }

  isMember (peer: PeerId | string): boolean { return this.members.has(peer.toString()) }
  setFederationCheck (fn: (peer: string) => boolean): void { this.federated = fn }
  list (): string[] { return [...this.members] }

  /** A recently refused peer: do not dial it again yet. */
  isRefused (peer: string): boolean {
    const until = this.refused.get(peer)
    if (until == null) return false
    if (until < Date.now()) { this.refused.delete(peer); return false }
    return true
  }

  /** Register a farm protocol that only members may use. */
  async handle (protocol: string, handler: StreamHandler, options: { maxInboundStreams?: number } = {}): Promise<void> {
    await this.libp2p.handle(protocol, async (stream: Stream, connection: Connection) => {
      if (!this.isMember(connection.remotePeer)) {
        this.log.debug(`refused ${protocol} from non-member ${connection.remotePeer.toString()}`)
        stream.abort(new Error('not a member of this site'))
        return
      }
      await handler(stream, connection)
    }, { maxInboundStreams: options.maxInboundStreams ?? 64 })
  }

  private admit (peer: string): void {
    this.refused.delete(peer)
    if (!this.members.has(peer)) {
      this.members.add(peer)
      this.emit('join', peer)
    }
  }

  private refuse (peer: string, reason: string, connection: Connection): void {
    this.log.info(`refused peer ${peer}: ${reason}`)
    this.refused.set(peer, Date.now() + REFUSED_TTL_MS)
    // let the reply reach the peer before closing
    setTimeout(() => { connection.close().catch(() => {}) }, 200).unref()
  }

  private onConnection (connection: Connection): void {
    const peer = connection.remotePeer.toString()
    if (connection.direction === 'outbound') {
      if (!this.federated(peer)) void this.handshake(connection)
      return
    }
    // The dialer must prove membership (or federation) promptly; a silent peer is cut off.
    setTimeout(() => {
      if (!this.members.has(peer) && !this.federated(peer) && connection.status === 'open') connection.close().catch(() => {})
    }, HANDSHAKE_DEADLINE_MS).unref()
  }

  private async handshake (connection: Connection): Promise<boolean> {
    const peer = connection.remotePeer.toString()
    const running = this.pending.get(peer)
    if (running != null) return await running
    const p = (async () => {
      try {
        await requestMembership(this.init, connection)
        this.admit(peer)
        return true
      } catch (err: any) {
        this.log.info(`membership with ${peer} failed: ${err.message}`)
        if (err.name === 'MembershipRefusedError') this.refused.set(peer, Date.now() + REFUSED_TTL_MS)
        await connection.close().catch(() => {})
        return false
      } finally {
        this.pending.delete(peer)
      }
    })()
    this.pending.set(peer, p)
    return await p
  }
}
