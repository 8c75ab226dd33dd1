import './polyfill.js'
import { hostname } from 'node:os'
import type { Libp2p } from '@libp2p/interface'
import { multiaddr } from '@multiformats/multiaddr'
import { acquireLock, ensureDataDir, type DataDir } from '../storage/data-dir.js'
import { loadOrCreateIdentity } from '../storage/identity.js'
import { readSiteSecret } from '../storage/site-secret.js'
import { createHost } from './libp2p-host.js'
import { SiteMembership } from './site-membership.js'
import { ResourceTable } from './resource-table.js'
import { Advertiser } from './advertiser.js'
import { MdnsDiscovery } from './mdns-discovery.js'
import { PeerDialer } from './peer-dialer.js'
import { ApiServer } from './api-server.js'
import { collectFingerprint, watchFingerprint, type FingerprintWatcher } from './fingerprint.js'
import { registerSiteRoutes } from './site-api.js'
import { SiteEvents } from './site-events.js'
import type { NodeOptions } from './options.js'
import type { Logger } from './logger.js'

/**
 * One farmesh node: the process every host of a farm runs. It composes the
 * libp2p host, site membership, the resource table fed by adverts,
 * discovery, and the local API; the render and schedule roles plug into it.
 * Components are passed explicitly: nothing here is global.
 */
export class FarmNode {
  readonly table = new ResourceTable()
  readonly events = new SiteEvents()
  dir!: DataDir
  libp2p!: Libp2p
  membership!: SiteMembership
  advertiser!: Advertiser
  api!: ApiServer
  private mdns?: MdnsDiscovery
  private dialer?: PeerDialer
  private watcher?: FingerprintWatcher
  private releaseLock?: () => Promise<void>
  private stopping = false
  private readonly stopHooks: Array<() => Promise<void>> = []

  constructor (readonly opts: NodeOptions, readonly log: Logger) {}

  get peerId (): string { return this.libp2p.peerId.toString() }
  private schedulerView: { leader: () => string | null, term: () => number } = { leader: () => null, term: () => 0 }
  /** The site's scheduler as this node sees it (set by the election). */
  schedulerId (): string | null { return this.schedulerView.leader() }
  schedulerTerm (): number { return this.schedulerView.term() }
  setSchedulerView (view: { leader: () => string | null, term: () => number }): void { this.schedulerView = view }

  async start (): Promise<void> {
    const o = this.opts
    this.dir = await ensureDataDir(o.data)
    this.releaseLock = await acquireLock(this.dir)
    try {
      await this.startParts()
    } catch (err) {
      await this.stop().catch(() => {})
      throw err
    }
  }

  private async startParts (): Promise<void> {
    const o = this.opts
    this.table.on('change', () => { this.events.hosts() })
    const privateKey = await loadOrCreateIdentity(this.dir.identityKey)
    const secret = await readSiteSecret(this.dir.siteSecret)
    let membership: SiteMembership | undefined
    this.libp2p = await createHost({ privateKey, listen: o.listen, isRefused: (p) => membership?.isRefused(p.toString()) ?? false })
    membership = new SiteMembership(this.libp2p, { site: o.site, secret, self: this.libp2p.peerId }, this.log)
    this.membership = membership
    await membership.start()

    const slotsTotal = o.render ? o.slots : 0
    const fingerprint = await collectFingerprint({ dataDir: this.dir.root, slotsTotal, disabledRenderers: o.disableRenderers })
    this.advertiser = new Advertiser({
      libp2p: this.libp2p, membership, table: this.table, log: this.log, site: o.site, fingerprint,
      roles: { render: o.render, schedule: o.schedule },
      onKnown: (addrs) => { this.learnPeers(addrs) }
    })
    await this.advertiser.start()
    // re-advertise when a renderer is installed or the licence file changes
    this.watcher = watchFingerprint({
      dataDir: this.dir.root, slotsTotal, disabledRenderers: o.disableRenderers, initial: fingerprint,
      onChange: (fp) => { this.advertiser.update({ fingerprint: { ...fp, slots: this.advertiser.current().fingerprint.slots } }) },
      onError: (err: any) => { this.log.debug(`fingerprint refresh failed: ${err.message}`) }
    })

    this.api = new ApiServer(this.dir, o.api)
    registerSiteRoutes(this.api, this)
    for (const hook of this.roleHooks) await hook()
    await this.api.start({ peerId: this.peerId, site: o.site })

    this.dialer = new PeerDialer(this.libp2p, membership, this.log)
    this.dialer.start(o.peers)
    if (o.mdns) {
      this.mdns = new MdnsDiscovery({
        site: o.site,
        peerId: this.peerId,
        interface: o.mdnsInterface,
        addresses: () => this.libp2p.getMultiaddrs().map(a => a.toString())
      })
      this.mdns.on('peer', ({ peerId, multiaddrs }) => { this.dialer?.add(peerId, multiaddrs) })
      this.mdns.start()
    }
    this.log.info(`farmesh node ${this.peerId} on ${hostname()} joined site ${o.site}${secret != null ? ' (private)' : ''}`)
    for (const a of this.libp2p.getMultiaddrs()) this.log.info(`listening on ${a.toString()}`)
    this.log.info(`API on ${this.api.url}`)
  }

  /** Peer exchange: dial members other members know of, so `--peer` to one host is enough. */
  private readonly knownAddrs = new Set<string>()
  private learnPeers (addrs: string[]): void {
    // heartbeats repeat the same lists: each address is handed to the dialer once (it keeps retrying it)
    for (const text of addrs) {
      if (this.knownAddrs.has(text) || this.knownAddrs.size > 10_000) continue
      this.knownAddrs.add(text)
      try {
        const ma = multiaddr(text)
        const peer = ma.getComponents().find(c => c.name === 'p2p')?.value
        if (peer != null && peer !== this.peerId && !this.membership.isMember(peer)) this.dialer?.add(peer, [ma])
      } catch {}
    }
  }

  private readonly roleHooks: Array<() => Promise<void>> = []
  /** Roles (renderer, scheduler, …) register start work here before start(). */
  onStart (hook: () => Promise<void>): void { this.roleHooks.push(hook) }
  onStop (hook: () => Promise<void>): void { this.stopHooks.push(hook) }

  /** Leave the site cleanly: peers drop us from their tables at once. */
  async stop (): Promise<void> {
    if (this.stopping) return
    this.stopping = true
    this.mdns?.stop()
    this.dialer?.stop()
    this.watcher?.stop()
    for (const hook of this.stopHooks.reverse()) await hook().catch((err: any) => { this.log.error(`stopping: ${err.message}`) })
    if (this.advertiser != null) await this.advertiser.leave().catch(() => {})
    await this.api?.stop().catch(() => {})
    if (this.libp2p != null) await Promise.resolve(this.libp2p.stop()).catch(() => {})
    await this.releaseLock?.()
  }
}
