import { copyFile, mkdir, readdir, readFile, rename, rm, stat } from 'node:fs/promises'
import { basename, dirname, join, resolve } from 'node:path'
import type { FarmNode } from '../farm-node.js'
import type { SiteClient } from '../site-client.js'
import type { BlobStore } from '../../storage/blob-store.js'
import type { JobStore, OriginJob } from '../../storage/job-store.js'
import { ORIGIN_PROTOCOL, serveOrigin, type FinishedRequest } from '../../protocols/origin-rpc.js'
import { BLOB_PROTOCOL, handleBlob } from '../../protocols/blob.js'
import { OUTPUT_PROTOCOL, handleOutput, pushOutput, type OutputHeader } from '../../protocols/output.js'
import { validateJobSpec, osUserAndGroup } from '../jobs/job-spec.js'
import { newJobId, type InputFile } from '../jobs/job-model.js'
import type { JobSpec } from '../jobs/job-spec.js'
import type { FederationRole } from '../federation/federation-role.js'
import { parseFrameRange } from '../jobs/frame-range.js'
import { jobRequirements } from '../jobs/job-spec.js'
import { matchesRequirements } from '../jobs/requirements.js'
import type { Replicator } from '../scheduler/replication.js'
import { collectInputs } from './job-inputs.js'
import { notifyJob, parseSmtpSettings, type SmtpSettings } from '../notify.js'
import { ApiError } from '../errors.js'
import type { OutputSink } from '../render/renderer-role.js'

/**
 * The origin of a job: the node it was submitted on. It hashes the inputs
 * into its content store and serves them by hash, receives every output
 * (the first complete copy of a frame wins), keeps them under
 * `outputs/<job>/`, and notifies the people who asked when the scheduler
 * says the job has finished.
 */
export class OriginRole {
  private smtp?: SmtpSettings
  private lock: Promise<unknown> = Promise.resolve()

  constructor (private readonly node: FarmNode, private readonly store: JobStore, private readonly blobs: BlobStore, private readonly client: SiteClient, private readonly replicator: Replicator) {}

  async start (): Promise<void> {
    this.smtp = await loadSmtp(this.node.dir.config)
    await this.removePartialOutputs()
    await this.node.membership.handle(BLOB_PROTOCOL, async (stream) => { await handleBlob(stream, this.blobs) })
    await this.node.membership.handle(OUTPUT_PROTOCOL, async (stream, connection) => {
      await handleOutput(stream, connection, async (header) => await this.placeOutput(header), { onStored: async (header) => { await this.recordOutput(header) } })
    })
    await this.node.membership.handle(ORIGIN_PROTOCOL, async (stream) => { await serveOrigin(stream, async (req) => await this.finished(req)) })
    this.client.local.origin = async (req) => await this.finished(req)
  }

  /** Uploads cut off by a crash leave their hidden temp files (`.name.xxxx.part`) beside the outputs: remove them. */
  private async removePartialOutputs (): Promise<void> {
    for (const job of await readdir(this.node.dir.outputs).catch(() => [] as string[])) {
      for (const name of await readdir(join(this.node.dir.outputs, job)).catch(() => [] as string[])) {
        if (name.startsWith('.') && (name.endsWith('.part') || name.endsWith('.tmp'))) await rm(join(this.node.dir.outputs, job, name), { force: true })
      }
    }
  }

  /** Where an arriving output goes; a frame already stored is a duplicate. */
  private async placeOutput (h: OutputHeader): Promise<{ dest: string } | { refuse: string } | { duplicate: true }> {
    const job = await this.store.getOrigin(h.jobId)
    if (job == null) return { refuse: `unknown job ${h.jobId}` }
    const dest = join(this.node.dir.outputs, h.jobId, h.name)
    if (job.outputs[h.name] != null) return { duplicate: true }
    await mkdir(join(this.node.dir.outputs, h.jobId), { recursive: true })
    // a file our records do not know is left from a crash before recording: replace it
    await rm(dest, { force: true })
    return { dest }
  }

  /** Record an output once its bytes are safely in place; a job from another site's output goes on to its origin. */
  async recordOutput (h: OutputHeader): Promise<void> {
    const job = await this.serial(async () => {
      const job = await this.store.getOrigin(h.jobId)
      if (job == null) return undefined
      job.outputs[h.name] = { frame: h.frame, size: h.size, hash: h.hash, host: h.host, storedAt: Date.now() }
      await this.store.putOrigin(job)
      return job
    })
    if (job?.remote != null && this.federation != null) {
      const file = join(this.node.dir.outputs, h.jobId, h.name)
      void this.forward(h, file)
    }
  }

  private async forward (h: OutputHeader, file: string, attempt = 0): Promise<void> {
    try {
      await this.federation!.forwardOutput(h.jobId, h, file)
    } catch (err: any) {
      if (attempt < 120) setTimeout(() => { void this.forward(h, file, attempt + 1) }, 5_000).unref()
      else this.node.log.error(`could not send ${h.name} of job ${h.jobId} to its origin site: ${err.message}`)
    }
  }

  /** Origin records are read, changed and written back: one change at a time, or outputs get lost. */
  private serial<T> (fn: () => Promise<T>): Promise<T> {
    const p = this.lock.then(fn, fn)
    this.lock = p.catch(() => {})
    return p
  }

  /** The renderers' way to hand an output to an origin, local or remote. */
  readonly sink: OutputSink = async (origin, header, file, signal) => {
    if (origin === this.node.peerId) {
      const place = await this.placeOutput(header)
      if ('duplicate' in place) return false
      if ('refuse' in place) throw new Error(place.refuse)
      const tmp = join(dirname(place.dest), `.${basename(place.dest)}.${process.pid}.tmp`)
      await copyFile(file, tmp)
      await rename(tmp, place.dest)
      await this.recordOutput(header)
      return true
    }
    const conn = await this.client.connection(origin, signal)
    const res = await pushOutput(conn, header, file, { signal })
    return res.stored
  }

  private federation?: FederationRole
  setFederation (f: FederationRole): void { this.federation = f }

  async submit (body: any): Promise<unknown> {
    if (typeof body !== 'object' || body == null) throw new ApiError('request body: expected a job spec', 400)
    const spec = validateJobSpec(body.spec, osUserAndGroup())
    const { scene, inputs } = await collectInputs(spec.scene, spec.files, this.blobs)
    const id = newJobId()
    const origin: OriginJob = { id, name: spec.name, submittedAt: Date.now(), outputs: {}, notify: spec.notify, spec, scene, inputs }
    // durable at the origin before the scheduler hears of it: outputs may arrive at once
    await this.store.putOrigin(origin)
    let outsourceTo: string | undefined
    try {
      if (spec.remote != null && spec.remote !== 'never') {
        if (this.federation == null) throw new ApiError('remote: this node has no federation', 400)
        const localCanRun = spec.remote === 'auto' ? this.localCanRun(spec) : true
        outsourceTo = await this.federation.chooseSite(spec, parseFrameRange(spec.frames).length, localCanRun)
        if (spec.remote === 'auto' && !localCanRun && outsourceTo == null) throw new ApiError('no local host and no federated site can render this job', 409)
      }
      const holders = outsourceTo != null ? [this.node.peerId] : [this.node.peerId, ...await this.replicateInputs(id, inputs)]
      const res = await this.client.scheduler<Record<string, unknown>>({ op: 'submit', id, spec, inputs, scene, holders, outsourceTo })
      if (outsourceTo != null) {
        await this.federation!.outsource(origin, outsourceTo).catch(async (err: any) => {
          this.node.log.error(`outsourcing job ${id} failed: ${err.message}`)
          await this.outsourceFailed(id)
        })
      }
      return { ...res, outsourcedTo: outsourceTo ?? null }
    } catch (err) {
      await this.store.deleteOrigin(id)
      throw err
    }
  }

  canRunHere (spec: NonNullable<OriginJob['spec']>): boolean { return this.localCanRun(spec) }

  /** Can a host of this site render the spec? (for `--remote auto`) */
  private localCanRun (spec: OriginJob['spec']): boolean {
    if (spec == null) return false
    const reqs = jobRequirements(spec)
    return this.node.table.entries().some(e => e.advert.roles.render && e.advert.fingerprint.slots.total > 0 && matchesRequirements(e.advert.fingerprint, reqs))
  }

  /** The remote refused the job or could not be reached: render here if we can, else fail the job. */
  async outsourceFailed (id: string): Promise<void> {
    const job = await this.store.getOrigin(id)
    await this.client.scheduler({ op: 'control', id, action: job?.spec != null && this.localCanRun(job.spec) ? 'localize' : 'kill' }).catch(() => {})
  }

  /** `farmesh outsource ID [--site]`: send a queued local job to a federated site. */
  async outsourceExisting (id: string, site: string | undefined): Promise<unknown> {
    const job = await this.store.getOrigin(id)
    if (job?.spec == null) throw new ApiError(`job ${id} was not submitted on this node: outsource it from its origin host`, 404)
    if (this.federation == null) throw new ApiError('this node has no federation', 400)
    const siteId = await this.federation.chooseSite({ ...job.spec, remote: site ?? 'auto' }, parseFrameRange(job.spec.frames).length, false)
    if (siteId == null) throw new ApiError('no federated site can render this job', 409)
    await this.client.scheduler({ op: 'control', id, action: 'outsource', site: siteId })
    await this.federation.outsource(job, siteId)
    return { id, outsourcedTo: siteId }
  }

  /** A job taken in from another site: submitted here as a sandboxed job whose origin is this node. */
  async submitRemote (r: { spec: JobSpec, inputs: InputFile[], scene: string, from: { site: string, jobId: string, peer: string } }): Promise<{ id: string }> {
    const id = newJobId()
    await this.store.putOrigin({ id, name: r.spec.name, submittedAt: Date.now(), outputs: {}, notify: [], spec: r.spec, scene: r.scene, inputs: r.inputs })
    await this.client.scheduler({ op: 'submit', id, spec: r.spec, inputs: r.inputs, scene: r.scene, holders: [this.node.peerId], sandbox: true })
    return { id }
  }

  async markRemote (id: string, remote: NonNullable<OriginJob['remote']>): Promise<void> {
    await this.serial(async () => {
      const job = await this.store.getOrigin(id)
      if (job == null) return
      job.remote = remote
      await this.store.putOrigin(job)
    })
  }

  /** Jobs of ours at another site that have not finished. */
  async openOutsourced (): Promise<OriginJob[]> {
    return (await this.store.allOrigin()).filter(j => j.outsourced != null && j.finished == null)
  }

  /** Take an outsourced job back from a site that vanished: render the rest here. */
  async abandonRemote (id: string): Promise<void> {
    const job = await this.store.getOrigin(id)
    if (job?.outsourced == null) return
    await this.client.scheduler({ op: 'control', id, action: 'localize' })
    await this.saveJob({ ...job, outsourced: undefined, billing: { abandoned: job.outsourced.siteId, at: Date.now() } })
  }

  async saveJob (job: OriginJob): Promise<void> {
    await this.serial(async () => {
      const current = await this.store.getOrigin(job.id)
      // outputs are recorded concurrently: keep them
      await this.store.putOrigin({ ...job, outputs: { ...(current?.outputs ?? {}), ...job.outputs } })
    })
  }

  /** An output of an outsourced job arriving from the remote site. */
  async placeFromRemote (h: OutputHeader): Promise<{ dest: string } | { refuse: string } | { duplicate: true }> {
    return await this.placeOutput(h)
  }

  /**
   * A second node keeps a copy of the inputs before the job is accepted, so
   * the job still renders when this host is switched off: the scheduler if
   * it runs elsewhere, else another member. A one-host site has no replica.
   */
  private async replicateInputs (id: string, inputs: InputFile[]): Promise<string[]> {
    const scheduler = this.node.schedulerId()
    const others = this.node.membership.list().filter(p => p !== this.node.peerId)
    const candidates = [...new Set([...(scheduler != null && scheduler !== this.node.peerId ? [scheduler] : []), ...others])].slice(0, 3)
    const errors: string[] = []
    for (const peer of candidates) {
      try {
        await this.replicator.requestHold(peer, id, inputs)
        return [peer]
      } catch (err: any) {
        errors.push(`${peer}: ${err.message}`)
      }
    }
    if (candidates.length > 0) throw new ApiError(`no other host could keep a copy of the job's inputs (${errors.join('; ')})`, 503)
    return []
  }

  private async finished (req: FinishedRequest): Promise<unknown> {
    const job = await this.serial(async () => {
      const job = await this.store.getOrigin(req.jobId)
      if (job == null || job.finished?.state === req.state) return undefined
      job.finished = { state: req.state, at: Date.now(), reason: req.reason }
      job.summary = req.summary
      await this.store.putOrigin(job)
      return job
    })
    if (job == null) return { known: true }
    this.node.log.info(`job ${job.id} (${job.name}) ${req.state}: ${Object.keys(job.outputs).length} output(s) in ${join(this.node.dir.outputs, job.id)}`)
    if (job.remote != null) void this.federation?.reportFinished(job.id, req.state, req.reason, req.summary).catch((err: any) => { this.node.log.error(`billing report for job ${job.id} not sent: ${err.message}`) })
    if (job.outsourced != null && req.state === 'killed') void this.federation?.killRemote(job).catch(() => {})
    if (job.notify.length > 0) void this.notify(job, req)
    return { known: true }
  }

  private async notify (job: OriginJob, req: FinishedRequest): Promise<void> {
    const s = req.summary as any
    const results = await notifyJob(job.notify, {
      id: job.id, name: job.name, state: req.state,
      frames: { total: s.frames?.total ?? 0, done: s.frames?.done ?? 0, failed: s.frames?.failed ?? 0 },
      user: s.user ?? '', submittedAt: new Date(job.submittedAt).toISOString(), finishedAt: new Date().toISOString(),
      wallSeconds: (Date.now() - job.submittedAt) / 1000, cpuSeconds: s.cpuSeconds ?? 0, reason: req.reason,
      outputsDir: join(this.node.dir.outputs, job.id), hosts: s.hosts ?? []
    }, { smtp: this.smtp })
    for (const r of results) {
      if (r.ok) this.node.log.info(`notified ${r.target} about job ${job.id}`)
      else this.node.log.error(`notifying ${r.target} about job ${job.id} failed: ${r.error}`)
    }
  }

  /** Copy a job's outputs where the user asked (`farmesh fetch ID DIR`). */
  async fetch (id: string, dir: string): Promise<unknown> {
    const job = await this.store.getOrigin(id)
    if (job == null) throw new ApiError(`job ${id} was not submitted on this node: fetch its outputs on its origin host`, 404)
    const src = join(this.node.dir.outputs, id)
    const dest = resolve(dir)
    await mkdir(dest, { recursive: true })
    const names = await readdir(src).catch(() => [] as string[])
    let bytes = 0
    for (const name of names.filter(n => job.outputs[n] != null)) {
      await copyFile(join(src, name), join(dest, name))
      bytes += (await stat(join(dest, name))).size
    }
    return { id, dir: dest, files: names.filter(n => job.outputs[n] != null).length, bytes }
  }

  async outputs (id: string): Promise<OriginJob | undefined> { return await this.store.getOrigin(id) }

  outputPath (id: string, name: string): string { return join(this.node.dir.outputs, id, name) }

  async forget (id: string): Promise<void> { await rm(join(this.node.dir.outputs, id), { recursive: true, force: true }) }
}

async function loadSmtp (configPath: string): Promise<SmtpSettings | undefined> {
  try {
    const cfg = JSON.parse(await readFile(configPath, 'utf8'))
    return cfg.smtp != null ? parseSmtpSettings(cfg.smtp) : undefined
  } catch (err: any) {
    if (err.code === 'ENOENT') return undefined
    throw err
  }
}
