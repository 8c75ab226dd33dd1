
import { createReadStream, createWriteStream } from 'node:fs'
import { mkdir, rm, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { pipeline } from 'node:stream/promises'
import { Readable } from 'node:stream'
import { multiaddr } from '@multiformats/multiaddr'
import type { Connection } from '@libp2p/interface'
import type { FarmNode } from '../farm-node.js'
import type { SiteClient } from '../site-client.js'
import type { BlobStore } from '../../storage/blob-store.js'
import type { OriginJob } from '../../storage/job-store.js'
import { FederationStore, type FederatedSite } from '../../storage/federation-store.js'
import { PendingInvites } from '../../storage/invites.js'
import { OriginStore } from '../../storage/origin-store.js'
import { exportSiteKeys, generateSiteKeys, importSiteKeys, loadSiteKeys, parseInvite, parseSiteCard, publicSiteCard, saveSiteKeys, encPublicKey, type SiteKeySet } from '../../storage/site-keys.js'
import { newBundleNonce, newStreamParams, packBundle, unpackBundle, exportStreamParams, importStreamParams } from '../../storage/bundle.js'
import { HELLO_PROTOCOL, FEDERATION_PROTOCOL, callHello, serveHello, makeProof, checkProof, callFederation, serveFederation, type HelloRequest, type HelloReply, type FederationRequest, type Offer, type FrameUpdate, type BillingLine } from '../../protocols/federation.js'
import { BUNDLE_PROTOCOL, handleBundlePush, pushBundle, type BundleHeader, type BundleReply } from '../../protocols/bundle-push.js'
import { SITE_KEYS_PROTOCOL, askSiteKeys, serveSiteKeys } from '../../protocols/site-keys.js'
import { handleOutput, pushOutput, type OutputHeader } from '../../protocols/output.js'
import { validateJobSpec, jobRequirements } from '../jobs/job-spec.js'
import { matchesRequirements, parseRequirements } from '../jobs/requirements.js'
import { parseInput } from '../../protocols/scheduler-rpc.js'
import { ApiError } from '../errors.js'
import type { OriginRole } from '../origin/origin-role.js'

/**
 * Federation between studios (the patent's FIGURES 11–17), run by every
 * node; the node that invites or joins is its site's gateway for that
 * federation.
 *
 * Origin side (site A): a job submitted with `--remote SITE` (or outsourced
 * later, or by `auto`) is packed — job description and the inputs the remote
 * lacks — into a bundle signed by A and encrypted to B's key, written to a
 * spool file and pushed over a resumable stream. Frame states, outputs and
 * the billing report come back; outputs are stored like local ones.
 *
 * Remote side (site B): the intake verifies federation and signature,
 * checks its hosts can run the job (refusing with a reason otherwise),
 * extracts into `origins/<A>/jobs/<job>/` and submits it as a sandboxed job;
 * as frames finish, their outputs go back to A, with a billing report at
 * the end. Only an active federated site may open anything but the hello.
 */
export const REMOTE_OUTPUT_PROTOCOL = '/farmesh/remote-output/1.0.0'
const SESSION_TIMEOUT_MS = 10_000
const FRAME_FLUSH_MS = 500
/** an outsourced job whose site has not been heard of for this long, and does not answer, comes home */
const REMOTE_SILENCE_MS = Number(process.env.FARMESH_REMOTE_TIMEOUT_MS ?? 60_000)

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
  private readonly frameQueue = new Map<string, Map<number, FrameUpdate>>()
  private flushTimer?: NodeJS.Timeout
  private keyTimer?: NodeJS.Timeout
  private watchTimer?: NodeJS.Timeout
  private sweepTimer?: NodeJS.Timeout
  /** outsourced job id → when its remote site was last heard of */
  private readonly lastHeard = new Map<string, number>()

  constructor (private readonly node: FarmNode, private readonly blobs: BlobStore, private readonly client: SiteClient, private readonly origin: OriginRole) {
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
      await handleBundlePush(stream, async (h) => await this.partPath(site, h), async (h, path) => await this.intake(site, peer, h, path))
    }))
    await lp.handle(REMOTE_OUTPUT_PROTOCOL, gated(async (stream, site, peer) => {
      await handleOutput(stream, { remotePeer: peer } as any, async (h) => await this.placeRemoteOutput(site, h), { onStored: async (h) => { await this.remoteOutputStored(h) } })
    }))
    this.node.events.on('event', (e) => { if (e.type === 'tasks') this.queueFrames(e.jobId, e.tasks) })
    this.flushTimer = setInterval(() => { void this.flushFrames() }, FRAME_FLUSH_MS)
    this.flushTimer.unref()
    this.keyTimer = setInterval(() => { void this.ensureKeys() }, 2_000)
    this.keyTimer.unref()
    this.watchTimer = setInterval(() => { void this.watchRemotes() }, Math.min(10_000, REMOTE_SILENCE_MS / 3))
    this.watchTimer.unref()
    // other sites' inputs are kept for re-renders, deduplicated, then swept (finished job directories too)
    this.sweepTimer = setInterval(() => { void this.originStore.sweep().catch(() => {}) }, 3_600_000)
    this.sweepTimer.unref()
    void this.originStore.sweep().catch(() => {})
    void this.ensureKeys()
  }

  stop (): void {
    if (this.watchTimer != null) clearInterval(this.watchTimer)
    if (this.sweepTimer != null) clearInterval(this.sweepTimer)
    if (this.flushTimer != null) clearInterval(this.flushTimer)
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
    await this.store.put(site)
    this.sessions.set(conn.remotePeer.toString(), site.siteId)
    this.node.log.info(`federated with site ${site.name} (${site.siteId})`)
    return site
  }

  async add (address: string): Promise<FederatedSite> {
    const { conn, reply } = await this.dialSite([address], (peer) => this.helloFor('add', peer))
    const site: FederatedSite = { ...reply.card, addresses: reply.addresses, state: reply.state === 'active' ? 'active' : 'asked', since: Date.now() }
    await this.store.put(site)
    if (site.state === 'active') this.sessions.set(conn.remotePeer.toString(), site.siteId)
    return site
  }

  async approve (idOrName: string): Promise<FederatedSite> {
    const site = await this.store.find(idOrName)
    if (site == null || site.state !== 'pending') throw new ApiError(`no pending request from site ${idOrName}`, 404)
    const { conn } = await this.dialSite(site.addresses, (peer) => this.helloFor('approved', peer))
    const active: FederatedSite = { ...site, state: 'active', since: Date.now() }
    await this.store.put(active)
    this.sessions.set(conn.remotePeer.toString(), site.siteId)
    return active
  }

  async remove (idOrName: string): Promise<boolean> {
    const site = await this.store.find(idOrName)
    if (site == null) throw new ApiError(`no federated site ${idOrName}`, 404)
    await this.session(site).then(async c => await callFederation(c, { op: 'remove' }, AbortSignal.timeout(5_000))).catch(() => {})
    for (const [peer, s] of this.sessions) if (s === site.siteId) this.sessions.delete(peer)
    return await this.store.remove(site.siteId)
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
        await this.store.put({ ...req.card, addresses: req.addresses, state: 'active', since: Date.now() })
        this.sessions.set(peer, req.card.siteId)
        this.node.log.info(`site ${req.card.name} (${req.card.siteId}) joined with an invite`)
        return reply('active')
      }
      case 'add':
        if (known?.state === 'active') { this.sessions.set(peer, known.siteId); return reply('active') }
        await this.store.put({ ...req.card, addresses: req.addresses, state: 'pending', since: Date.now() })
        this.node.log.info(`site ${req.card.name} (${req.card.siteId}) asks to federate: farmesh federation approve ${req.card.name}`)
        return reply('pending')
      case 'approved':
        if (known?.state !== 'asked') throw new Error('we did not ask this site')
        await this.store.put({ ...known, ...req.card, addresses: req.addresses, state: 'active', since: Date.now() })
        this.sessions.set(peer, known.siteId)
        return reply('active')
    }
  }

  /** An open, greeted connection to a federated site. */
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
        await this.store.remove(site)
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
  async chooseSite (spec: { remote?: string, renderer: { name: string }, requirements: string[], frames: string }, frameCount: number, localCanRun: boolean): Promise<string | undefined> {
    const remote = spec.remote
    if (remote == null || remote === 'never') return undefined
    if (remote !== 'auto') return (await this.activeSite(remote)).siteId
    if (localCanRun) return undefined
    let best: { site: FederatedSite, offer: Offer } | undefined
    for (const site of (await this.store.list()).filter(s => s.state === 'active')) {
      try {
        const offer = await callFederation<Offer>(await this.session(site), { op: 'offer', renderer: spec.renderer.name, requirements: spec.requirements, frames: frameCount }, AbortSignal.timeout(5_000))
        if (offer.canRun && (best == null || offer.estimateSec < best.offer.estimateSec)) best = { site, offer }
      } catch (err: any) {
        this.node.log.debug(`no offer from ${site.name}: ${err.message}`)
      }
    }
    return best?.site.siteId
  }

  /** Pack, encrypt, spool and push a job to the site it is outsourced to; resumes after interruptions. */
  async outsource (job: OriginJob, siteId: string): Promise<void> {
    const keys = this.requireKeys()
    const site = await this.activeSite(siteId)
    const conn = await this.session(site)
    const inputs = job.inputs ?? []
    const { have } = await callFederation<{ have: string[] }>(conn, { op: 'have', hashes: inputs.map(i => i.hash) }, AbortSignal.timeout(10_000))
    const held = new Set(have)
    const nonce = job.outsourced?.nonce ?? newBundleNonce()
    const params = job.outsourced?.params != null ? importStreamParams(job.outsourced.params) : newStreamParams()
    const createdAt = job.outsourced?.createdAt ?? Date.now()
    job.outsourced = { siteId, nonce, params: exportStreamParams(params), createdAt, sentFiles: inputs.filter(i => !held.has(i.hash)).length, bytesSent: 0 }
    await this.origin.saveJob(job)
    const spool = join(this.node.dir.root, 'spool', `${job.id}.bundle`)
    await mkdir(join(this.node.dir.root, 'spool'), { recursive: true })
    await pipeline(Readable.from(packBundle({
      job: { spec: job.spec, scene: job.scene, inputs },
      files: inputs.map(i => ({ path: i.path, hash: i.hash, size: i.size, original: i.original, ...(held.has(i.hash) ? {} : { source: this.blobs.path(i.hash) }) })),
      signer: keys.signPrivate, recipientEncPub: encPublicKey(Buffer.from(site.encPub, 'base64url')), recipientSiteId: site.siteId,
      jobId: job.id, originSiteId: keys.siteId, createdAt, nonce, params
    })), createWriteStream(spool))
    const total = (await stat(spool)).size
    let offset = 0
    for (let attempt = 0; attempt < 20; attempt++) {
      try {
        const c = await this.session(site)
        const res: BundleReply = await pushBundle(c, { jobId: job.id, nonce, offset, total }, createReadStream(spool, { start: offset }))
        if (!res.ok) {
          if (res.resumeAt != null) { offset = res.resumeAt; continue }
          throw new Error(res.reason)
        }
        job.outsourced = { ...job.outsourced, bytesSent: total, remoteJobId: res.remoteJobId }
        await this.origin.saveJob(job)
        await rm(spool, { force: true })
        if (!res.accepted) throw new ApiError(`site ${site.name} refused the job: ${res.reason ?? 'no reason given'}`, 409)
        this.node.log.info(`job ${job.id} outsourced to ${site.name}: ${total} bytes, ${job.outsourced.sentFiles} of ${inputs.length} inputs sent`)
        return
      } catch (err: any) {
        if (err.name === 'ApiError') throw err
        this.node.log.info(`push of job ${job.id} to ${site.name} interrupted (${err.message}); resuming`)
        await new Promise(resolve => setTimeout(resolve, 1_000))
        offset = -1 // ask the receiver where to resume
        const probe = await pushBundle(await this.session(site), { jobId: job.id, nonce, offset: total, total }, Readable.from([])).catch(() => undefined)
        offset = probe != null && !probe.ok && probe.resumeAt != null ? probe.resumeAt : 0
      }
    }
    throw new ApiError(`could not push job ${job.id} to ${site.name}`, 502)
  }

  async killRemote (job: OriginJob): Promise<void> {
    if (job.outsourced == null) return
    const site = await this.store.find(job.outsourced.siteId)
    if (site == null) return
    await callFederation(await this.session(site), { op: 'kill', jobId: job.id }, AbortSignal.timeout(5_000))
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
      await this.origin.abandonRemote(job.id).catch((err: any) => { this.node.log.error(`taking job ${job.id} back failed: ${err.message}`) })
    }
  }

  private heard (jobId: string): void { this.lastHeard.set(jobId, Date.now()) }

  private async remoteOutputStored (h: OutputHeader): Promise<void> {
    this.heard(h.jobId)
    await this.origin.recordOutput(h)
    await this.client.scheduler({ op: 'remote-frames', id: h.jobId, frames: [{ frame: h.frame, state: 'done', host: h.host, attempts: 1, progress: 1 }] })
  }

  private async framesFromRemote (site: string, jobId: string, frames: FrameUpdate[]): Promise<unknown> {
    const job = await this.origin.outputs(jobId)
    if (job?.outsourced?.siteId !== site) throw new Error(`job ${jobId} was not outsourced to you`)
    this.heard(jobId)
    // done is ours to say, once the output is here
    const updates = frames.filter(f => f.state !== 'done')
    if (updates.length > 0) await this.client.scheduler({ op: 'remote-frames', id: jobId, frames: updates })
    return { ok: true }
  }

  private async finishedAtRemote (site: string, req: Extract<FederationRequest, { op: 'finished' }>): Promise<unknown> {
    const job = await this.origin.outputs(req.jobId)
    if (job?.outsourced?.siteId !== site) throw new Error(`job ${req.jobId} was not outsourced to you`)
    job.billing = { site, ...req.billing, state: req.state, reason: req.reason, at: Date.now() }
    await this.origin.saveJob(job)
    if (req.state !== 'done') await this.client.scheduler({ op: 'control', id: req.jobId, action: 'localize' }).catch(() => {})
    this.node.log.info(`site ${site} finished job ${req.jobId} (${req.state}): ${req.billing.frames} frames, ${req.billing.hosts.reduce((s, h) => s + h.cpuSeconds, 0).toFixed(1)} CPU s`)
    return { ok: true }
  }

  // ------------------------------------------------------------ remote side: intake

  private async partPath (site: string, h: BundleHeader): Promise<string> {
    const dir = join(this.originStore.intakeDir(), 'parts')
    await mkdir(dir, { recursive: true })
    return join(dir, `${site}-${h.jobId}-${h.nonce}.part`)
  }

  /** submit_remote_job: verify, check we can, unpack into the origin's store, enqueue sandboxed. */
  private async intake (site: string, peer: string, h: BundleHeader, path: string): Promise<BundleReply> {
    const keys = this.requireKeys()
    const federated = await this.store.find(site)
    try {
      const unpacked = await unpackBundle(createReadStream(path), {
        recipientEncPriv: keys.encPrivate,
        recipientSiteId: keys.siteId,
        trustedSigners: (origin) => origin === site && federated?.state === 'active' ? Buffer.from(federated.signPub, 'base64url') : undefined,
        seenNonce: async (origin, nonce) => await this.store.seenNonce(origin, nonce),
        tempDir: this.originStore.intakeDir()
      })
      try {
        const m = unpacked.manifest
        if (m.originSiteId !== site || m.jobId !== h.jobId || m.nonce !== h.nonce) return { ok: true, accepted: false, reason: 'bundle does not match its header' }
        const job = m.job as { spec: unknown, scene: unknown, inputs: unknown[] }
        const spec = validateJobSpec((job as any).spec)
        const inputs = Array.isArray(job.inputs) ? job.inputs.map((x, i) => parseInput(x, `inputs[${i}]`)) : []
        // the job's inputs are the bundle's signed files, hash for hash: renderers fetch inputs by hash
        // from this node's shared blob store, so an unbound hash would hand the job someone else's file
        const signed = new Map(m.files.map(f => [f.path, f.hash]))
        const unbound = inputs.find(i => signed.get(i.path) !== i.hash)
        if (unbound != null) return { ok: true, accepted: false, reason: `input ${unbound.path} is not the bundle's file of that name (hash ${unbound.hash.slice(0, 12)}…)` }
        const reqs = jobRequirements(spec)
        if (!this.node.table.entries().some(e => e.advert.roles.render && matchesRequirements(e.advert.fingerprint, reqs))) {
          return { ok: true, accepted: false, reason: `no host of site ${this.node.opts.site} can render it (${reqs.map(r => `${r.key}${r.op}${String(r.value)}`).join(', ')})` }
        }
        if (!(await this.store.useNonce(site, m.nonce))) return { ok: true, accepted: false, reason: 'replayed bundle' }
        const mat = await this.originStore.materializeJob(site, m.jobId, m, unpacked.files)
        // renderers fetch inputs by hash from this node
        for (const i of inputs) await this.blobs.putFile(join(mat.inputDir, ...i.path.split('/')))
        const local = await this.origin.submitRemote({ spec: { ...spec, remote: undefined, notify: [], after: undefined, afterFrames: undefined, uses: undefined }, inputs, scene: String(job.scene), from: { site, jobId: m.jobId, peer } })
        this.remote.set(local.id, { originSite: site, originJobId: m.jobId, originPeer: peer, bytesReceived: h.total })
        await this.origin.markRemote(local.id, { site, jobId: m.jobId, peer, bytesReceived: h.total })
        return { ok: true, accepted: true, remoteJobId: local.id }
      } finally {
        await rm(unpacked.dir, { recursive: true, force: true })
      }
    } catch (err: any) {
      this.node.log.info(`refused a bundle from ${site}: ${err.message}`)
      return { ok: true, accepted: false, reason: err.message }
    } finally {
      await rm(path, { force: true })
    }
  }

  private remoteOf (localJobId: string): RemoteJob | undefined { return this.remote.get(localJobId) }

  /** Our job changed: frame states of jobs from other sites go back to their origins. */
  private queueFrames (jobId: string, tasks: Array<{ frames: number[], state: string, host: string | null, attempts: number }>): void {
    if (this.remoteOf(jobId) == null) return
    const q = this.frameQueue.get(jobId) ?? new Map<number, FrameUpdate>()
    for (const t of tasks) for (const f of t.frames) q.set(f, { frame: f, state: t.state as FrameUpdate['state'], host: t.host, attempts: t.attempts, progress: t.state === 'done' ? 1 : 0 })
    this.frameQueue.set(jobId, q)
  }

  private async flushFrames (): Promise<void> {
    for (const [jobId, q] of [...this.frameQueue]) {
      this.frameQueue.delete(jobId)
      const r = this.remoteOf(jobId)
      const site = r != null ? await this.store.find(r.originSite) : undefined
      if (r == null || site == null) continue
      try {
        await callFederation(await this.session(site), { op: 'frames', jobId: r.originJobId, frames: [...q.values()] }, AbortSignal.timeout(5_000))
      } catch { this.frameQueue.set(jobId, new Map([...q, ...(this.frameQueue.get(jobId) ?? [])])) }
    }
  }

  /** An output of a job from another site is stored here: send it on to its origin. */
  async forwardOutput (localJobId: string, h: OutputHeader, file: string): Promise<void> {
    const r = this.remoteOf(localJobId)
    const site = r != null ? await this.store.find(r.originSite) : undefined
    if (r == null || site == null) return
    await pushOutput(await this.session(site), { ...h, jobId: r.originJobId }, file, { protocol: REMOTE_OUTPUT_PROTOCOL })
  }

  async reportFinished (localJobId: string, state: 'done' | 'failed' | 'killed', reason: string | undefined, summary: any): Promise<void> {
    const r = this.remoteOf(localJobId)
    const site = r != null ? await this.store.find(r.originSite) : undefined
    if (r == null || site == null) return
    await this.flushFrames()
    const hosts: BillingLine[] = summary?.billing ?? []
    await callFederation(await this.session(site), {
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
    for (const j of list) if (j.remote != null) this.remote.set(j.id, { originSite: j.remote.site, originJobId: j.remote.jobId, originPeer: j.remote.peer, bytesReceived: j.remote.bytesReceived })
  }
}

