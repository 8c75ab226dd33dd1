import { peerIdFromString } from '@libp2p/peer-id'
import type { Connection } from '@libp2p/interface'
import { callScheduler, type SchedulerRequest } from '../protocols/scheduler-rpc.js'
import { callRenderer, type RenderRequest } from '../protocols/render-rpc.js'
import { callOrigin, type FinishedRequest } from '../protocols/origin-rpc.js'
import type { FarmNode } from './farm-node.js'

/**
 * How roles talk to each other: to the site's scheduler, to a renderer, to a
 * job's origin. When the other role runs in this same process the call is
 * made directly, so a one-host farm works and no loopback hop is wasted.
 */
export class NoSchedulerError extends Error {
  constructor (message = 'this site has no scheduler yet (no host allows scheduling)') { super(message); this.name = 'NoSchedulerError' }
}

export interface LocalHandlers {
  scheduler?: (req: SchedulerRequest, from: string) => Promise<unknown>
  renderer?: (req: RenderRequest, from: string) => Promise<unknown>
  origin?: (req: FinishedRequest, from: string) => Promise<unknown>
}

export class SiteClient {
  readonly local: LocalHandlers = {}

  constructor (private readonly node: FarmNode) {}

  /** An open connection to a member, dialling it by peer id when needed. */
  async connection (peer: string, signal?: AbortSignal): Promise<Connection> {
    const open = this.node.libp2p.getConnections(peerIdFromString(peer)).find(c => c.status === 'open')
    if (open != null) return open
    return await this.node.libp2p.dial(peerIdFromString(peer), { signal: signal ?? AbortSignal.timeout(5_000) })
  }

  async scheduler<T> (req: SchedulerRequest, signal?: AbortSignal): Promise<T> {
    const id = this.node.schedulerId()
    if (id == null) throw new NoSchedulerError()
    if (id === this.node.peerId && this.local.scheduler != null) return await this.local.scheduler(req, id) as T
    return await callScheduler<T>(await this.connection(id, signal), req, signal)
  }

  async renderer<T> (peer: string, req: RenderRequest, signal?: AbortSignal): Promise<T> {
    if (peer === this.node.peerId && this.local.renderer != null) return await this.local.renderer(req, peer) as T
    return await callRenderer<T>(await this.connection(peer, signal), req, signal)
  }

  async origin (peer: string, req: FinishedRequest, signal?: AbortSignal): Promise<void> {
    if (peer === this.node.peerId && this.local.origin != null) { await this.local.origin(req, peer); return }
    await callOrigin(await this.connection(peer, signal), req, signal)
  }
}
