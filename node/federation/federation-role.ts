
import { mkdir, readdir, rm, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { multiaddr } from '@multiformats/multiaddr'
import { peerIdFromString } from '@libp2p/peer-id'
import type { Connection } from '@libp2p/interface'
import type { FarmNode } from '../farm-node.js'
import type { SiteClient } from '../site-client.js'
import type { BlobStore } from '../../storage/blob-store.js'
import type { OriginJob } from '../../storage/job-store.js'
import { FederationStore, type FederatedSite } from '../../storage/federation-store.js'
import { PendingInvites } from '../../storage/invites.js'
import { OriginStore } from '../../storage/origin-store.js'
import { exportSiteKeys, generateSiteKeys, importSiteKeys, loadSiteKeys, parseInvite, parseSiteCard, publicSiteCard, saveSiteKeys, encPublicKey, type SiteKeySet } from '../../storage/site-keys.js'
import { BundleError, newBundleNonce, newStreamParams, packBundle, unpackBundle, exportStreamParams, importStreamParams, type BundleManifest } from '../../storage/bundle.js'
import { HELLO_PROTOCOL, FEDERATION_PROTOCOL, callHello, serveHello, makeProof, checkProof, callFederation, serveFederation, type HelloRequest, type HelloReply, type FederationRequest, type Offer, type FrameUpdate, type BillingLine, MAX_LOG_LINES } from '../../protocols/federation.js'
import { BUNDLE_PROTOCOL, BundleReceiver, probeBundle, pushBundle, type BundleHeader, type BundleReply, type IntakeVerdict } from '../../protocols/bundle-push.js'
import { SITE_KEYS_PROTOCOL, askSiteKeys, serveSiteKeys } from '../../protocols/site-keys.js'
import { FEDERATION_SYNC_PROTOCOL, exchangeFederation, serveFederationSync } from '../../protocols/federation-sync.js'
import { handleOutput, pushOutput, type OutputHeader } from '../../protocols/output.js'
import { validateJobSpec, jobRequirements } from '../jobs/job-spec.js'
import { matchesRequirements, parseRequirements } from '../jobs/requirements.js'
import { parseInput } from '../../protocols/scheduler-rpc.js'
import { formatFrameRange } from '../jobs/frame-range.js'
import { ApiError } from '../errors.js'
import type { OriginRole } from '../origin/origin-role.js'

/**
 * Federation between studios (the patent's FIGURES 11–17), run by every
 * node; the node that invites or joins is its site's gateway for that
 * federation.
 *
 * Origin side (site A): a job submitted with `--remote SITE` (or outsourced
 * later, or by `auto`) is packed — job description and the inputs the remote
 * lacks — into a bundle signed by A and encrypted to B's key, and streamed
 * to B over a resumable push. Frame states, outputs and the billing report
 * come back; outputs are stored like local ones.
 *
 * Remote side (site B): the intake unpacks while the bundle arrives: it
 * verifies federation and signature, checks from the manifest that its
 * hosts can run the job and that the origin's quota has room (refusing with
 * a reason otherwise, before the files come), extracts into
 * `origins/<A>/jobs/<job>/` and submits it as a sandboxed job;
 * as frames finish, their outputs go back to A, with a billing report at
 * the end. Only an active federated site may open anything but the hello.
 */
export const REMOTE_OUTPUT_PROTOCOL = '/farmesh/remote-output/1.0.0'
const SESSION_TIMEOUT_MS = 10_000
const FRAME_FLUSH_MS = 500
/** how often the progress and live log lines of other sites' running frames are sampled for them */
const PROGRESS_EVERY_MS = 2_000
/** an outsourced job whose site has not been heard of for this long, and does not answer, comes home */
const REMOTE_SILENCE_MS = Number(process.env.FARMESH_REMOTE_TIMEOUT_MS ?? 60_000)
const SYNC_EVERY_MS = 60_000
/** federation requests from other sites waiting for `approve` */
const MAX_PENDING = 32
/** a half-pushed bundle nobody resumed for this long is dropped */
const PART_TTL_MS = 24 * 3600_000

interface RemoteJob { originSite: string, originJobId: string, originPeer: string, bytesReceived: number }

export class FederationRole {
  keys?: SiteKeySet
  readonly store: FederationStore
  private readonly invites: PendingInvites
  private readonly originStore: OriginStore
  /** authenticated sessions: peer id → the federated site it speaks for */
  private readonly sessions = new Map<string, string>()
  /** peers we dial for federation: they skip the membership handshake */
  private readonly expecting = new Set<string>()
  /** jobs taken in from other sites, by our local job id */
  private readonly remote = new Map<string, RemoteJob>()
  /** of those, the ones whose progress is still sampled */
  private readonly unfinished = new Set<string>()
  private readonly frameQueue = new Map<string, Map<number, FrameUpdate>>()
  private flushTimer?: NodeJS.Timeout
  private progressTimer?: NodeJS.Timeout
  private keyTimer?: NodeJS.Timeout
  private watchTimer?: NodeJS.Timeout
  private sweepTimer?: NodeJS.Timeout
  private syncTimer?: NodeJS.Timeout
  private syncPending?: NodeJS.Timeout
  /** outsourced job id → when its remote site was last heard of */
  private readonly lastHeard = new Map<string, number>()

  private readonly bundles: BundleReceiver

  constructor (private readonly node: FarmNode, private readonly blobs: BlobStore, private readonly client: SiteClient, private readonly origin: OriginRole) {
    this.bundles = new BundleReceiver({ isTruncation: (err) => err instanceof BundleError && err.reason === 'truncated', log: (line) => { node.log.info(line) } })
    this.store = new FederationStore(join(node.dir.root, 'federation.json'))
    this.invites = new PendingInvites(join(node.dir.root, 'invites.json'))
    this.originStore = new OriginStore(join(node.dir.root, 'origins'), { retentionMs: node.opts.remoteRetentionDays * 86_400_000 })
  }

  async start (): Promise<void> {
    await this.originStore.init()
    this.keys = await loadSiteKeys(join(this.node.dir.root, 'site-keys.json'))
    const lp = this.node.libp2p
    this.node.membership.setFederationCheck((peer) => this.sessions.has(peer) || this.expecting.has(peer))
    await this.node.membership.handle(SITE_KEYS_PROTOCOL, async (stream) => { await serveSiteKeys(stream, () => this.keys != null ? exportSiteKeys(this.keys) : undefined) })
    await this.node.membership.handle(FEDERATION_SYNC_PROTOCOL, async (stream) => {
      await serveFederationSync(stream, async (theirs) => { await this.mergeRecords(theirs); return await this.store.records() })
    })
    // the hello is the one federation protocol a stranger may open: it is small and bounded
    await lp.handle(HELLO_PROTOCOL, async (stream, connection) => {
      await serveHello(stream, async (req) => await this.answerHello(req, connection.remotePeer.toString()))
    })
    // everything else only for peers that completed a hello for an active site: refused before reading
    const gated = (fn: (stream: any, site: string, peer: string) => Promise<void>) => async (stream: any, connection: Connection): Promise<void> => {
      const peer = connection.remotePeer.toString()
      const site = this.sessions.get(peer)
      if (site == null) { stream.abort(new Error('not a federated site')); return }
      await fn(stream, site, peer)
    }
    await lp.handle(FEDERATION_PROTOCOL, gated(async (stream, site, peer) => { await serveFederation(stream, async (req) => await this.answer(req, site, peer)) }))
    await lp.handle(BUNDLE_PROTOCOL, gated(async (stream, site, peer) => {
      await this.bundles.handle(stream, { partPath: async (h) => await this.partPath(site, h), take: async (h, source) => await this.intake(site, peer, h, source) })
    }))
    await lp.handle(REMOTE_OUTPUT_PROTOCOL, gated(async (stream, site, peer) => {
      await handleOutput(stream, { remotePeer: peer } as any, async (h) => await this.placeRemoteOutput(site, h), { onStored: async (h) => { await this.remoteOutputStored(h) } })
    }))
    this.node.events.on('event', (e) => { if (e.type === 'tasks') this.queueFrames(e.jobId, e.tasks) })
    this.flushTimer = setInterval(() => { void this.flushFrames() }, FRAME_FLUSH_MS)
    this.flushTimer.unref()
    this.progressTimer = setInterval(() => { void this.sampleProgress() }, PROGRESS_EVERY_MS)
    this.progressTimer.unref()
    this.keyTimer = setInterval(() => { void this.ensureKeys() }, 2_000)
    this.keyTimer.unref()
    this.watchTimer = setInterval(() => { void this.watchRemotes() }, Math.min(10_000, REMOTE_SILENCE_MS / 3))
    this.watchTimer.unref()
    // other sites' inputs are kept for re-renders, deduplicated, then swept (finished job directories too)
    this.sweepTimer = setInterval(() => { void this.originStore.sweep().catch(() => {}); void this.sweepParts() }, 3_600_000)
    this.sweepTimer.unref()
    // members' lists converge after every change (syncSoon) and, for a host that was away, every minute
    this.syncTimer = setInterval(() => { void this.syncMembers() }, SYNC_EVERY_MS)
    this.syncTimer.unref()
    setTimeout(() => { void this.syncMembers() }, 3_000).unref()
    void this.originStore.sweep().catch(() => {})
    void this.sweepParts()
    void this.ensureKeys()
    void this.resumePushes().catch((err: any) => { this.node.log.error(`resuming pushes: ${err.message}`) })
  }

  stop (): void {
    if (this.watchTimer != null) clearInterval(this.watchTimer)
    if (this.sweepTimer != null) clearInterval(this.sweepTimer)
    if (this.syncTimer != null) clearInterval(this.syncTimer)
    if (this.flushTimer != null) clearInterval(this.flushTimer)
    if (this.progressTimer != null) clearInterval(this.progressTimer)
    if (this.keyTimer != null) clearInterval(this.keyTimer)
  }

  // ------------------------------------------------------------ site identity

  /** The site's keys: from a member that has them, else created by the elected scheduler. */
  private async ensureKeys (): Promise<void> {
    if (this.keys != null) { if (this.keyTimer != null) clearInterval(this.keyTimer); return }
    for (const peer of this.node.membership.list()) {
      try {
        const text = await askSiteKeys(await this.client.connection(peer))
        if (text == null) continue
        this.keys = importSiteKeys(text)
        await saveSiteKeys(join(this.node.dir.root, 'site-keys.json'), this.keys)
        this.node.log.info(`site identity ${this.keys.siteId} received from ${peer}`)
        return
      } catch {}
    }
    if (this.node.schedulerId() === this.node.peerId) {
      this.keys = generateSiteKeys(this.node.opts.site)
      await saveSiteKeys(join(this.node.dir.root, 'site-keys.json'), this.keys)
      this.node.log.info(`site identity ${this.keys.siteId} created`)
    }
  }

  private requireKeys (): SiteKeySet {
    if (this.keys == null) throw new ApiError('this site has no identity yet (it is created by the elected scheduler a few seconds after start)', 503)
    return this.keys
  }

  siteView (): { siteId: string | null, name: string, addresses: string[] } {
    return { siteId: this.keys?.siteId ?? null, name: this.node.opts.site, addresses: this.addresses() }
  }

  private addresses (): string[] {
    const all = this.node.libp2p.getMultiaddrs().map(a => a.toString())
    const outside = all.filter(a => !a.startsWith('/ip4/127.') && !a.startsWith('/ip6/::1/'))
    return (outside.length > 0 ? outside : all).slice(0, 8)
  }

  // ------------------------------------------------------------ the site's members share its federations

  private async putSite (site: FederatedSite): Promise<void> {
    await this.store.put(site)
    this.syncSoon()
  }

  private async removeSite (siteId: string): Promise<boolean> {
    const removed = await this.store.remove(siteId)
    for (const [peer, s] of this.sessions) if (s === siteId) this.sessions.delete(peer)
    this.syncSoon()
    return removed
  }

  private async mergeRecords (theirs: FederatedSite[]): Promise<void> {
    for (const site of await this.store.merge(theirs)) {
      if (site.state !== 'active') for (const [peer, s] of this.sessions) if (s === site.siteId) this.sessions.delete(peer)
      this.node.log.info(`federation with ${site.name} (${site.siteId}) is ${site.state}, as another member of this site says`)
    }
  }

  private syncSoon (): void {
    if (this.syncPending != null) return
    this.syncPending = setTimeout(() => { this.syncPending = undefined; void this.syncMembers() }, 200)
    this.syncPending.unref()
  }

  /** Exchange federation lists with every member; both sides keep the newest record per site. */
  private async syncMembers (): Promise<void> {
    await Promise.all(this.node.membership.list().map(async (peer) => {
      try {
        await this.mergeRecords(await exchangeFederation(await this.client.connection(peer), await this.store.records(), AbortSignal.timeout(5_000)))
      } catch (err: any) {
        this.node.log.debug(`federation sync with ${peer}: ${err.message}`)
      }
    }))
  }

  // ------------------------------------------------------------ joining sites

  async invite (ttlMs: number): Promise<{ token: string, expiresAt: number }> {
    const keys = this.requireKeys()
    const { token, invite } = await this.invites.issue(publicSiteCard(keys), this.addresses(), ttlMs)
    return { token, expiresAt: invite.expiresAt }
  }

  /** Dial one of a site's addresses and say hello; the connection is then a session. */
  private async dialSite (addresses: string[], req: (peer: string) => HelloRequest): Promise<{ conn: Connection, reply: HelloReply }> {
    const errors: string[] = []
    for (const text of addresses) {
      try {
        const ma = multiaddr(text)
        const peer = ma.getComponents().find(c => c.name === 'p2p')?.value
        if (peer == null) { errors.push(`${text}: no /p2p/ peer id`); continue }
        this.expecting.add(peer)
        const conn = await this.node.libp2p.dial(ma, { signal: AbortSignal.timeout(SESSION_TIMEOUT_MS) })
        const reply = await callHello(conn, req(peer), AbortSignal.timeout(SESSION_TIMEOUT_MS))
        if (!checkProof(reply.card, reply.proof, peer, this.node.peerId)) throw new Error('its site proof does not verify')
        return { conn, reply }
      } catch (err: any) {
        errors.push(`${text}: ${err.message}`)
      }
    }
    throw new ApiError(`could not reach the site (${errors.join('; ')})`, 502)
  }

  private helloFor (op: HelloRequest['op'], peer: string, extra: Partial<HelloRequest> = {}): HelloRequest {
    const keys = this.requireKeys()
    return { op, card: publicSiteCard(keys), proof: makeProof(keys, this.node.peerId, peer), addresses: this.addresses(), ...extra }
  }

  async join (token: string): Promise<FederatedSite> {
    let inv
    try { inv = parseInvite(token) } catch (err: any) { throw new ApiError(err.message, 400) }
    const { conn, reply } = await this.dialSite(inv.addresses, (peer) => this.helloFor('join', peer, { secret: inv.secret }))
    if (reply.card.siteId !== inv.siteId) throw new ApiError(`the site at that address is ${reply.card.siteId}, not ${inv.siteId}`, 502)
    const site: FederatedSite = { ...reply.card, addresses: reply.addresses, state: 'active', since: Date.now() }
    await this.putSite(site)
    this.sessions.set(conn.remotePeer.toString(), site.siteId)
    this.node.log.info(`federated with site ${site.name} (${site.siteId})`)
    return site
  }

  async add (address: string): Promise<FederatedSite> {
    const { conn, reply } = await this.dialSite([address], (peer) => this.helloFor('add', peer))
    const site: FederatedSite = { ...reply.card, addresses: reply.addresses, state: reply.state === 'active' ? 'active' : 'asked', since: Date.now() }
    await this.putSite(site)
    if (site.state === 'active') this.sessions.set(conn.remotePeer.toString(), site.siteId)
    return site
  }

  async approve (idOrName: string): Promise<FederatedSite> {
    const site = await this.store.find(idOrName)
    if (site == null || site.state !== 'pending') throw new ApiError(`no pending request from site ${idOrName}`, 404)
    const { conn } = await this.dialSite(site.addresses, (peer) => this.helloFor('approved', peer))
    const active: FederatedSite = { ...site, state: 'active', since: Date.now() }
    await this.putSite(active)
    this.sessions.set(conn.remotePeer.toString(), site.siteId)
    return active
  }

  async remove (idOrName: string): Promise<boolean> {
    const site = await this.store.find(idOrName)
    if (site == null) throw new ApiError(`no federated site ${idOrName}`, 404)
    await this.session(site).then(async c => await callFederation(c, { op: 'remove' }, AbortSignal.timeout(5_000))).catch(() => {})
    for (const [peer, s] of this.sessions) if (s === site.siteId) this.sessions.delete(peer)
    return await this.removeSite(site.siteId)
  }

  private async answerHello (req: HelloRequest, peer: string): Promise<HelloReply> {
    const keys = this.requireKeys()
    if (!checkProof(req.card, req.proof, peer, this.node.peerId)) throw new Error('site proof does not verify')
    parseSiteCard(req.card)
    const known = await this.store.find(req.card.siteId)
    const reply = (state: HelloReply['state']): HelloReply => ({ card: publicSiteCard(keys), proof: makeProof(keys, this.node.peerId, peer), addresses: this.addresses(), state })
    switch (req.op) {
      case 'hello':
        if (known?.state !== 'active') throw new Error('not a federated site')
        this.sessions.set(peer, known.siteId)
        return reply('active')
      case 'join': {
        if (req.secret == null) throw new Error('join needs an invite secret')
        await this.invites.consume(Buffer.from(req.secret, 'base64url'))
        await this.putSite({ ...req.card, addresses: req.addresses, state: 'active', since: Date.now() })
        this.sessions.set(peer, req.card.siteId)
        this.node.log.info(`site ${req.card.name} (${req.card.siteId}) joined with an invite`)
        return reply('active')
      }
      case 'add':
        if (known?.state === 'active') { this.sessions.set(peer, known.siteId); return reply('active') }
        // anyone may ask: keep the operator's list (and our file) bounded
        if (known?.state !== 'pending' && (await this.store.list()).filter(s => s.state === 'pending').length >= MAX_PENDING) {
          throw new Error(`too many requests wait for approval here (${MAX_PENDING}); ask this site's operator`)
        }
        await this.putSite({ ...req.card, addresses: req.addresses, state: 'pending', since: Date.now() })
        this.node.log.info(`site ${req.card.name} (${req.card.siteId}) asks to federate: farmesh federation approve ${req.card.name}`)
        return reply('pending')
      case 'approved':
        if (known?.state !== 'asked') throw new Error('we did not ask this site')
        await this.putSite({ ...known, ...req.card, addresses: req.addresses, state: 'active', since: Date.now() })
        this.sessions.set(peer, known.siteId)
        return reply('active')
    }
  }

  /** An open, greeted connection to a federated site. */
  /**
   * A session with one particular node of a federated site: the node a job
   * came from (frames, outputs and billing go back to it, not to any node of
   * its site) or the node that took a bundle in (kill, resume go to it).
   */
  private async sessionWith (site: FederatedSite, peer: string): Promise<Connection> {
    const id = peerIdFromString(peer)
    const open = this.node.libp2p.getConnections(id).find(c => c.status === 'open')
    if (open != null && this.sessions.get(peer) === site.siteId) return open
    // after a restart the peer store is empty: the site's own addresses of that node come first
    const listed = site.addresses.filter(a => a.endsWith(`/p2p/${peer}`))
    if (open == null && listed.length > 0) {
      const { conn, reply } = await this.dialSite(listed, (p) => this.helloFor('hello', p))
      if (reply.card.siteId !== site.siteId) throw new Error(`node ${peer} belongs to ${reply.card.siteId}, not ${site.name}`)
      this.sessions.set(peer, site.siteId)
      return conn
    }
    this.expecting.add(peer)
    const conn = open ?? await this.node.libp2p.dial(id, { signal: AbortSignal.timeout(SESSION_TIMEOUT_MS) })
    const reply = await callHello(conn, this.helloFor('hello', peer), AbortSignal.timeout(SESSION_TIMEOUT_MS))
    if (reply.card.siteId !== site.siteId || !checkProof(reply.card, reply.proof, peer, this.node.peerId)) throw new Error(`node ${peer} does not prove it belongs to site ${site.name}`)
    this.sessions.set(peer, site.siteId)
    return conn
  }

  private async session (site: FederatedSite): Promise<Connection> {
    for (const [peer, s] of this.sessions) {
      if (s !== site.siteId) continue
      const open = this.node.libp2p.getConnections().find(c => c.remotePeer.toString() === peer && c.status === 'open')
      if (open != null) return open
    }
    const { conn } = await this.dialSite(site.addresses, (peer) => this.helloFor('hello', peer))
    this.sessions.set(conn.remotePeer.toString(), site.siteId)
    return conn
  }

  private async activeSite (idOrName: string): Promise<FederatedSite> {
    const site = await this.store.find(idOrName)
    if (site == null || site.state !== 'active') throw new ApiError(`remote: ${idOrName} is not a federated site (farmesh federation list)`, 400)
    return site
  }

  // ------------------------------------------------------------ requests from federated sites

  private async answer (req: FederationRequest, site: string, _peer: string): Promise<unknown> {
    switch (req.op) {
      case 'remove':
        await this.removeSite(site)
        for (const [p, s] of this.sessions) if (s === site) this.sessions.delete(p)
        return { removed: true }
      case 'offer': return this.offer(req.renderer, req.requirements, req.frames)
      case 'have': return { have: await this.held(site, req.hashes) }
      case 'frames': return await this.framesFromRemote(site, req.jobId, req.frames)
      case 'finished': return await this.finishedAtRemote(site, req)
      case 'kill': return await this.killFromOrigin(site, req.jobId)
      case 'received': return { ok: true }
    }
  }

  private offer (renderer: string, requirements: string[], frames: number): Offer {
    let reqs
    try { reqs = [...parseRequirements([`renderer=${renderer}`]), ...parseRequirements(requirements)] } catch (err: any) { return { canRun: false, reason: err.message, freeSlots: 0, matchingHosts: 0, estimateSec: Infinity } }
    const hosts = this.node.table.entries().filter(e => e.advert.roles.render && matchesRequirements(e.advert.fingerprint, reqs))
    const slots = hosts.reduce((n, e) => n + e.advert.fingerprint.slots.total, 0)
    const free = hosts.reduce((n, e) => n + Math.max(0, e.advert.fingerprint.slots.total - e.advert.fingerprint.slots.busy), 0)
    if (hosts.length === 0) return { canRun: false, reason: `no host of site ${this.node.opts.site} matches`, freeSlots: 0, matchingHosts: 0, estimateSec: Infinity }
    // a rough estimate: frames spread over the matching slots, at a nominal 10 s a frame
    return { canRun: true, freeSlots: free, matchingHosts: hosts.length, estimateSec: Math.ceil(frames / Math.max(1, slots)) * 10 }
  }

  private async held (site: string, hashes: string[]): Promise<string[]> {
    const missing = new Set(await this.originStore.missing(site, hashes))
    return hashes.filter(h => !missing.has(h))
  }

  // ------------------------------------------------------------ origin side: outsourcing

  /** Which federated site a new job goes to: named, or chosen by offers for `auto`. */
  async chooseSite (spec: { remote?: string, renderer: { name: string }, requirements: string[], frames: string }, frameCount: number, localCanRun: boolean, exclude?: string): Promise<string | undefined> {
    const remote = spec.remote
    if (remote == null || remote === 'never') return undefined
    if (remote !== 'auto') return (await this.activeSite(remote)).siteId
    if (localCanRun) return undefined
    let best: { site: FederatedSite, offer: Offer } | undefined
    for (const site of (await this.store.list()).filter(s => s.state === 'active' && s.siteId !== exclude)) {
      try {
        const offer = await callFederation<Offer>(await this.session(site), { op: 'offer', renderer: spec.renderer.name, requirements: spec.requirements, frames: frameCount }, AbortSignal.timeout(5_000))
        if (offer.canRun && (best == null || offer.estimateSec < best.offer.estimateSec)) best = { site, offer }
      } catch (err: any) {
        this.node.log.debug(`no offer from ${site.name}: ${err.message}`)
      }
    }
    return best?.site.siteId
  }

  /**
   * Pack, encrypt and push a job to the site it is outsourced to, as one
   * stream: inputs are read, tarred and sealed as the connection takes them
   * (no spool file), and the receiver unpacks while they arrive. The bundle
   * is a pure function of what `job.outsourced` records — nonce, stream
   * parameters, creation time, the inputs the remote already held — so a
   * push cut off by a dropped connection, or by this node restarting
   * (`resumePushes`), regenerates the same bytes and sends only those the
   * receiver lacks.
   */
  async outsource (job: OriginJob, siteId: string, opts: { signal?: AbortSignal, frames?: string, resume?: boolean } = {}): Promise<void> {
    const keys = this.requireKeys()
    const site = await this.activeSite(siteId)
    const inputs = job.inputs ?? []
    let o = job.outsourced
    if (o?.siteId !== siteId || o.remoteJobId != null || o.held == null || o.remotePeer == null || (opts.frames != null && o.frames !== opts.frames)) {
      // one node of the remote site answers what it holds and takes the bundle (its store, its part file)
      const c0 = await this.session(site)
      const { have } = await callFederation<{ have: string[] }>(c0, { op: 'have', hashes: inputs.map(i => i.hash) }, AbortSignal.timeout(10_000))
      const known = new Set(inputs.map(i => i.hash))
      const held = [...new Set(have)].filter(h => known.has(h))
      o = { siteId, nonce: newBundleNonce(), params: exportStreamParams(newStreamParams()), createdAt: Date.now(), held, remotePeer: c0.remotePeer.toString(), sentFiles: new Set(inputs.filter(i => !held.includes(i.hash)).map(i => i.hash)).size, bytesSent: 0, ...(opts.frames != null ? { frames: opts.frames } : {}) }
      job.outsourced = o
      await this.origin.saveJob(job)
    }
    const record = o
    const held = new Set(record.held)
    const params = importStreamParams(record.params)
    // a job taken back from a vanished site goes on with only the frames it still needs
    const spec = record.frames != null && job.spec != null ? { ...job.spec, frames: record.frames } : job.spec
    const bundleFrom = (offset: number): AsyncIterable<Uint8Array> => packBundle({
      job: { spec, scene: job.scene, inputs },
      files: inputs.map(i => ({ path: i.path, hash: i.hash, size: i.size, original: i.original, ...(held.has(i.hash) ? {} : { source: this.blobs.path(i.hash) }) })),
      signer: keys.signPrivate, recipientEncPub: encPublicKey(Buffer.from(site.encPub, 'base64url')), recipientSiteId: site.siteId,
      jobId: job.id, originSiteId: keys.siteId, createdAt: record.createdAt, nonce: record.nonce, params, offset, signal: opts.signal
    })
    const started = Date.now()
    // a push resumed after a restart: the receiver says how much it holds
    let offset = record.bytesSent > 0 || opts.resume === true ? -1 : 0
    let lastSave = Date.now()
    for (let attempt = 0; attempt < 20; attempt++) {
      try {
        const c = await this.sessionWith(site, record.remotePeer!)
        if (offset < 0) {
          offset = await probeBundle(c, { jobId: job.id, nonce: record.nonce }, opts.signal)
          this.node.log.info(`resuming the push of job ${job.id} to ${site.name} at byte ${offset}`)
        }
        const before = record.bytesSent
        const res: BundleReply = await pushBundle(c, { jobId: job.id, nonce: record.nonce, offset }, bundleFrom(offset), {
          signal: opts.signal,
          onProgress: (n) => {
            record.bytesSent = before + n
            // `farmesh job ID` shows a long push advancing (and a restart resumes from the receiver's count, not this)
            if (Date.now() - lastSave > 1_000) { lastSave = Date.now(); void this.origin.saveJob(job).catch(() => {}) }
          }
        })
        if (!res.ok) {
          if (res.resumeAt == null) throw new Error(res.reason)
          this.node.log.info(`push of job ${job.id} to ${site.name} stopped at ${res.resumeAt} bytes (${res.reason}); resuming`)
          offset = res.resumeAt
          continue
        }
        record.pushMs = Date.now() - started
        record.bundleBytes = offset + (record.bytesSent - before)
        if (res.accepted) record.remoteJobId = res.remoteJobId
        await this.origin.saveJob(job)
        if (!res.accepted) throw new ApiError(`site ${site.name} refused the job: ${res.reason ?? 'no reason given'}`, 409)
        this.node.log.info(`job ${job.id} outsourced to ${site.name}: ${record.bundleBytes} bytes in ${record.pushMs} ms, ${record.sentFiles} of ${inputs.length} inputs sent`)
        return
      } catch (err: any) {
        if (err.name === 'ApiError' || opts.signal?.aborted === true) throw err
        this.node.log.info(`push of job ${job.id} to ${site.name} interrupted (${err.message}); resuming`)
        await new Promise(resolve => setTimeout(resolve, 1_000))
        offset = -1
      }
    }
    throw new ApiError(`could not push job ${job.id} to ${site.name}`, 502)
  }

  /** After a restart: pushes that were cut off go on from where the receiver stopped. */
  async resumePushes (): Promise<void> {
    for (const job of await this.origin.openOutsourced()) {
      const o = job.outsourced!
      if (o.remoteJobId != null || o.held == null) continue
      void this.outsource(job, o.siteId, { frames: o.frames, resume: true }).catch(async (err: any) => {
        this.node.log.error(`outsourcing job ${job.id} failed: ${err.message}`)
        await this.origin.outsourceFailed(job.id).catch(() => {})
      })
    }
  }

  async killRemote (job: OriginJob): Promise<void> {
    if (job.outsourced == null) return
    const site = await this.store.find(job.outsourced.siteId)
    if (site == null) return
    const conn = job.outsourced.remotePeer != null ? await this.sessionWith(site, job.outsourced.remotePeer) : await this.session(site)
    await callFederation(conn, { op: 'kill', jobId: job.id }, AbortSignal.timeout(5_000))
  }

  /** A remote output for one of our jobs: store it like a local one. */
  private async placeRemoteOutput (site: string, h: OutputHeader): Promise<{ dest: string } | { refuse: string } | { duplicate: true }> {
    const job = await this.origin.outputs(h.jobId)
    if (job?.outsourced?.siteId !== site) return { refuse: `job ${h.jobId} was not outsourced to you` }
    return await this.origin.placeFromRemote(h)
  }

  /**
   * The remote site vanished mid-job: after REMOTE_SILENCE_MS without a word
   * from it, and no answer when asked, the unfinished frames come back to
   * this site's queue (where, if no host of ours can render them, they wait
   * with that reason). Frames already here stay done; a late output from
   * the vanished site for a frame rendered meanwhile is a duplicate and is
   * discarded, so no frame is committed twice.
   */
  private async watchRemotes (): Promise<void> {
    const now = Date.now()
    for (const job of await this.origin.openOutsourced()) {
      const site = job.outsourced!.siteId
      const heard = this.lastHeard.get(job.id) ?? (this.lastHeard.set(job.id, now), now)
      if (now - heard < REMOTE_SILENCE_MS) continue
      const fed = await this.store.find(site)
      const alive = fed != null && await this.session(fed).then(async c => await callFederation(c, { op: 'have', hashes: [] }, AbortSignal.timeout(5_000))).then(() => true, () => false)
      if (alive) { this.lastHeard.set(job.id, now); continue }
      this.node.log.info(`site ${fed?.name ?? site} has been silent for ${Math.round((now - heard) / 1000)} s: job ${job.id} comes back`)
      this.lastHeard.delete(job.id)
      const moved = await this.reoffer(job, site).catch((err: any) => { this.node.log.error(`offering job ${job.id} to another site failed: ${err.message}`); return false })
      if (!moved) await this.origin.abandonRemote(job.id).catch((err: any) => { this.node.log.error(`taking job ${job.id} back failed: ${err.message}`) })
    }
  }

  /**
   * A job taken back from a vanished site goes to another federated site
   * when no host here can render it and one offers to: with only the frames
   * not delivered yet. False when it stays here.
   */
  private async reoffer (job: OriginJob, vanished: string): Promise<boolean> {
    if (job.spec == null || this.origin.canRunHere(job.spec)) return false
    const view = await this.client.scheduler<{ frames?: Array<{ frame: number, state: string }> }>({ op: 'job', id: job.id })
    const left = (view.frames ?? []).filter(f => f.state !== 'done').map(f => f.frame)
    if (left.length === 0) return false
    const frames = formatFrameRange(left)
    const siteId = await this.chooseSite({ ...job.spec, frames, remote: 'auto' }, left.length, false, vanished)
    if (siteId == null) return false
    await this.client.scheduler({ op: 'control', id: job.id, action: 'localize', site: siteId })
    this.node.log.info(`job ${job.id}: frames ${frames} offered to site ${siteId}`)
    void this.outsource(job, siteId, { frames }).catch(async (err: any) => {
      this.node.log.error(`outsourcing job ${job.id} to ${siteId} failed: ${err.message}`)
      await this.origin.outsourceFailed(job.id).catch(() => {})
    })
    return true
  }

  private heard (jobId: string): void { this.lastHeard.set(jobId, Date.now()) }

  private async remoteOutputStored (h: OutputHeader): Promise<void> {
    this.heard(h.jobId)
    await this.origin.recordOutput(h)
    this.toScheduler({ op: 'remote-frames', id: h.jobId, frames: [{ frame: h.frame, state: 'done', host: h.host, attempts: 1, progress: 1 }] }, `frame ${h.frame} of job ${h.jobId} done`)
  }

  /**
   * Tell this site's scheduler what a remote site said, however long it takes
   * to be reachable: right after this node restarts there is none for a few
   * seconds, and the remote will not say it twice (its output is stored here
   * already, a second push of it is a duplicate).
   */
  private toScheduler (req: Record<string, unknown>, what: string, attempt = 0): void {
    this.client.scheduler(req as any).catch((err: any) => {
      if (attempt >= 120) { this.node.log.error(`${what}: the scheduler did not take it (${err.message})`); return }
      setTimeout(() => { this.toScheduler(req, what, attempt + 1) }, 1_000).unref()
    })
  }

  private async framesFromRemote (site: string, jobId: string, frames: FrameUpdate[]): Promise<unknown> {
    const job = await this.origin.outputs(jobId)
    if (job?.outsourced?.siteId !== site) throw new Error(`job ${jobId} was not outsourced to you`)
    this.heard(jobId)
    // done is ours to say, once the output is here; until then a frame rendered there is still running here
    const arrived = new Set(Object.values(job.outputs ?? {}).map(o => o.frame))
    const updates = frames.map(f => f.state !== 'done' || arrived.has(f.frame) ? f : { ...f, state: 'running' as const, progress: 1 })
    if (updates.length > 0) this.toScheduler({ op: 'remote-frames', id: jobId, frames: updates }, `frame states of job ${jobId}`)
    return { ok: true }
  }

  private async finishedAtRemote (site: string, req: Extract<FederationRequest, { op: 'finished' }>): Promise<unknown> {
    const job = await this.origin.outputs(req.jobId)
    if (job?.outsourced?.siteId !== site) throw new Error(`job ${req.jobId} was not outsourced to you`)
    job.billing = { site, ...req.billing, state: req.state, reason: req.reason, at: Date.now() }
    await this.origin.saveJob(job)
    if (req.state !== 'done') this.toScheduler({ op: 'control', id: req.jobId, action: 'localize' }, `taking job ${req.jobId} back`)
    this.node.log.info(`site ${site} finished job ${req.jobId} (${req.state}): ${req.billing.frames} frames, ${req.billing.hosts.reduce((s, h) => s + h.cpuSeconds, 0).toFixed(1)} CPU s`)
    return { ok: true }
  }

  // ------------------------------------------------------------ remote side: intake

  private partDir (): string { return join(this.originStore.intakeDir(), 'parts') }

  private async partPath (site: string, h: Pick<BundleHeader, 'jobId' | 'nonce'>): Promise<string> {
    await mkdir(this.partDir(), { recursive: true })
    return join(this.partDir(), `${site}-${h.jobId}-${h.nonce}.part`)
  }

  private async partBytes (site: string, h: BundleHeader): Promise<number> {
    return await stat(await this.partPath(site, h)).then(s => s.size, () => 0)
  }

  /** Parts of pushes nobody resumed for PART_TTL_MS: the sender gave up or was removed. */
  private async sweepParts (): Promise<void> {
    const now = Date.now()
    for (const name of await readdir(this.partDir()).catch(() => [] as string[])) {
      const p = join(this.partDir(), name)
      const st = await stat(p).catch(() => undefined)
      if (st != null && now - st.mtimeMs > PART_TTL_MS) await rm(p, { force: true })
    }
  }

  /**
   * submit_remote_job, as the bundle arrives: verify federation, signature
   * and freshness; as soon as the manifest is known, check that this site
   * can render the job and has room for it (refusing then, before the
   * files come); unpack into the origin's store; enqueue sandboxed.
   */
  private async intake (site: string, peer: string, h: BundleHeader, source: AsyncIterable<Uint8Array>): Promise<IntakeVerdict> {
    const keys = this.requireKeys()
    const federated = await this.store.find(site)
    let checked: { spec: ReturnType<typeof validateJobSpec>, inputs: ReturnType<typeof parseInput>[], scene: string } | undefined
    const unpacked = await unpackBundle(source, {
      recipientEncPriv: keys.encPrivate,
      recipientSiteId: keys.siteId,
      trustedSigners: (origin) => origin === site && federated?.state === 'active' ? Buffer.from(federated.signPub, 'base64url') : undefined,
      seenNonce: async (origin, nonce) => await this.store.seenNonce(origin, nonce),
      tempDir: this.originStore.intakeDir(),
      onManifest: async (m) => {
        try {
          checked = await this.checkRemoteJob(site, h, m)
        } catch (err: any) {
          throw err instanceof BundleError ? err : new BundleError('refused', err.message)
        }
      }
    })
    try {
      const m = unpacked.manifest
      const { spec, inputs, scene } = checked!
      if (!(await this.store.useNonce(site, m.nonce))) return { accepted: false, reason: 'replayed bundle' }
      const mat = await this.originStore.materializeJob(site, m.jobId, m, unpacked.files)
      // renderers fetch inputs by hash from this node: link the verified, read-only copies (no second copy)
      for (const i of inputs) await this.blobs.adoptVerified(i.hash, join(mat.inputDir, ...i.path.split('/')))
      const local = await this.origin.submitRemote({ spec: { ...spec, remote: undefined, notify: [], after: undefined, afterFrames: undefined, uses: undefined }, inputs, scene, from: { site, jobId: m.jobId, peer } })
      const received = await this.partBytes(site, h)
      this.remote.set(local.id, { originSite: site, originJobId: m.jobId, originPeer: peer, bytesReceived: received })
      this.unfinished.add(local.id)
      await this.origin.markRemote(local.id, { site, jobId: m.jobId, peer, bytesReceived: received })
      return { accepted: true, remoteJobId: local.id }
    } finally {
      await rm(unpacked.dir, { recursive: true, force: true })
    }
  }

  /** What the intake checks once the manifest is verified: the job itself, our hosts, our room. */
  private async checkRemoteJob (site: string, h: BundleHeader, m: BundleManifest): Promise<{ spec: ReturnType<typeof validateJobSpec>, inputs: ReturnType<typeof parseInput>[], scene: string }> {
    if (m.originSiteId !== site || m.jobId !== h.jobId || m.nonce !== h.nonce) throw new Error('bundle does not match its header')
    const job = m.job as { spec: unknown, scene: unknown, inputs: unknown[] }
    const spec = validateJobSpec((job as any)?.spec)
    const inputs = Array.isArray(job.inputs) ? job.inputs.map((x, i) => parseInput(x, `inputs[${i}]`)) : []
    // the job's inputs are the bundle's signed files, hash for hash: renderers fetch inputs by hash
    // from this node's shared blob store, so an unbound hash would hand the job someone else's file
    const signed = new Map(m.files.map(f => [f.path, f.hash]))
    const unbound = inputs.find(i => signed.get(i.path) !== i.hash)
    if (unbound != null) throw new Error(`input ${unbound.path} is not the bundle's file of that name (hash ${unbound.hash.slice(0, 12)}…)`)
    const reqs = jobRequirements(spec)
    if (!this.node.table.entries().some(e => e.advert.roles.render && matchesRequirements(e.advert.fingerprint, reqs))) {
      throw new Error(`no host of site ${this.node.opts.site} can render it (${reqs.map(r => `${r.key}${r.op}${String(r.value)}`).join(', ')})`)
    }
    const quota = this.node.opts.remoteQuotaGb * 2 ** 30
    const incoming = m.files.filter(f => f.included).reduce((s, f) => s + f.size, 0)
    const used = await this.originStore.usage(site)
    if (used + incoming > quota) {
      throw new Error(`site ${this.node.opts.site} keeps at most ${this.node.opts.remoteQuotaGb} GiB for site ${site}: ${(used / 2 ** 30).toFixed(2)} GiB held, this job brings ${(incoming / 2 ** 30).toFixed(2)} GiB`)
    }
    return { spec, inputs, scene: String(job.scene) }
  }

  private remoteOf (localJobId: string): RemoteJob | undefined { return this.remote.get(localJobId) }

  /** Our job changed: frame states of jobs from other sites go back to their origins. */
  private queueFrames (jobId: string, tasks: Array<{ frames: number[], state: string, host: string | null, attempts: number, progress: number, logTail: string[] }>): void {
    if (this.remoteOf(jobId) == null) return
    const q = this.frameQueue.get(jobId) ?? new Map<number, FrameUpdate>()
    for (const t of tasks) {
      for (const f of t.frames) {
        q.set(f, { frame: f, state: t.state as FrameUpdate['state'], host: t.host, attempts: t.attempts, progress: t.state === 'done' ? 1 : t.progress, logTail: t.logTail.slice(-MAX_LOG_LINES).map(l => l.slice(0, 1000)) })
      }
    }
    this.frameQueue.set(jobId, q)
  }

  /**
   * Progress and live log lines are volatile at the scheduler (no events):
   * sample them for the running frames of other sites' jobs taken in here.
   */
  private async sampleProgress (): Promise<void> {
    for (const localId of this.unfinished) {
      try {
        const view = await this.client.scheduler<{ state: string, tasks: Array<{ frames: number[], state: string, host: string | null, attempts: number, progress: number, logTail: string[] }> }>({ op: 'job', id: localId })
        if (['done', 'failed', 'killed'].includes(view.state)) { this.unfinished.delete(localId); continue }
        const running = view.tasks.filter(t => t.state === 'running')
        if (running.length > 0) this.queueFrames(localId, running)
      } catch {} // no scheduler this moment: the next sample
    }
  }

  private async flushFrames (): Promise<void> {
    for (const [jobId, q] of [...this.frameQueue]) {
      this.frameQueue.delete(jobId)
      const r = this.remoteOf(jobId)
      const site = r != null ? await this.store.find(r.originSite) : undefined
      if (r == null || site == null) continue
      try {
        await callFederation(await this.sessionWith(site, r.originPeer), { op: 'frames', jobId: r.originJobId, frames: [...q.values()] }, AbortSignal.timeout(5_000))
      } catch { this.frameQueue.set(jobId, new Map([...q, ...(this.frameQueue.get(jobId) ?? [])])) }
    }
  }

  /** An output of a job from another site is stored here: send it on to its origin. */
  async forwardOutput (localJobId: string, h: OutputHeader, file: string): Promise<void> {
    const r = this.remoteOf(localJobId)
    const site = r != null ? await this.store.find(r.originSite) : undefined
    if (r == null || site == null) return
    await pushOutput(await this.sessionWith(site, r.originPeer), { ...h, jobId: r.originJobId }, file, { protocol: REMOTE_OUTPUT_PROTOCOL })
  }

  async reportFinished (localJobId: string, state: 'done' | 'failed' | 'killed', reason: string | undefined, summary: any): Promise<void> {
    const r = this.remoteOf(localJobId)
    const site = r != null ? await this.store.find(r.originSite) : undefined
    if (r == null || site == null) return
    await this.flushFrames()
    const hosts: BillingLine[] = summary?.billing ?? []
    await callFederation(await this.sessionWith(site, r.originPeer), {
      op: 'finished', jobId: r.originJobId, state, reason,
      billing: { hosts, bytesReceived: r.bytesReceived, bytesSent: summary?.bytesSent ?? 0, frames: summary?.frames?.done ?? 0 }
    }, AbortSignal.timeout(10_000))
    await this.originStore.markFinished(r.originSite, r.originJobId).catch(() => {})
  }

  private async killFromOrigin (site: string, originJobId: string): Promise<unknown> {
    for (const [local, r] of this.remote) {
      if (r.originSite !== site || r.originJobId !== originJobId) continue
      await this.client.scheduler({ op: 'control', id: local, action: 'kill' }).catch(() => {})
      await this.originStore.removeJob(site, originJobId).catch(() => {})
      return { killed: true }
    }
    return { killed: false }
  }

  /** Rebuild the map of jobs taken in from other sites after a restart. */
  async restore (list: Array<{ id: string, remote?: { site: string, jobId: string, peer: string, bytesReceived: number } }>): Promise<void> {
    for (const j of list) {
      if (j.remote == null) continue
      this.remote.set(j.id, { originSite: j.remote.site, originJobId: j.remote.jobId, originPeer: j.remote.peer, bytesReceived: j.remote.bytesReceived })
      this.unfinished.add(j.id) // the first sample drops the finished ones
    }
  }
}

