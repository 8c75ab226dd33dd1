import { copyFile, mkdir, readdir, readFile, rename, rm, stat } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import type { FarmNode } from '../farm-node.js'
import type { SiteClient } from '../site-client.js'
import type { BlobStore } from '../../storage/blob-store.js'
import type { JobStore, OriginJob } from '../../storage/job-store.js'
import { ORIGIN_PROTOCOL, serveOrigin, type FinishedRequest } from '../../protocols/origin-rpc.js'
import { BLOB_PROTOCOL, handleBlob } from '../../protocols/blob.js'
import { OUTPUT_PROTOCOL, handleOutput, pushOutput, type OutputHeader } from '../../protocols/output.js'
import { validateJobSpec, osUserAndGroup } from '../jobs/job-spec.js'
import { newJobId, type InputFile } from '../jobs/job-model.js'
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
    await this.node.membership.handle(BLOB_PROTOCOL, async (stream) => { await handleBlob(stream, this.blobs) })
    await this.node.membership.handle(OUTPUT_PROTOCOL, async (stream, connection) => {
      await handleOutput(stream, connection, async (header) => await this.placeOutput(header), { onStored: async (header) => { await this.recordOutput(header) } })
    })
    await this.node.membership.handle(ORIGIN_PROTOCOL, async (stream) => { await serveOrigin(stream, async (req) => await this.finished(req)) })
    this.client.local.origin = async (req) => await this.finished(req)
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

  /** Record an output once its bytes are safely in place. */
  async recordOutput (h: OutputHeader): Promise<void> {
    await this.serial(async () => {
      const job = await this.store.getOrigin(h.jobId)
      if (job == null) return
      job.outputs[h.name] = { frame: h.frame, size: h.size, hash: h.hash, host: h.host, storedAt: Date.now() }
      await this.store.putOrigin(job)
    })
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
      const tmp = `${place.dest}.${process.pid}.tmp`
      await copyFile(file, tmp)
      await rename(tmp, place.dest)
      await this.recordOutput(header)
      return true
    }
    const conn = await this.client.connection(origin, signal)
    const res = await pushOutput(conn, header, file, { signal })
    return res.stored
  }

  async submit (body: any): Promise<unknown> {
    if (typeof body !== 'object' || body == null) throw new ApiError('request body: expected a job spec', 400)
    const spec = validateJobSpec(body.spec, osUserAndGroup())
    const { scene, inputs } = await collectInputs(spec.scene, spec.files, this.blobs)
    const id = newJobId()
    const origin: OriginJob = { id, name: spec.name, submittedAt: Date.now(), outputs: {}, notify: spec.notify }
    // durable at the origin before the scheduler hears of it: outputs may arrive at once
    await this.store.putOrigin(origin)
    try {
      const holders = [this.node.peerId, ...await this.replicateInputs(id, inputs)]
      return await this.client.scheduler({ op: 'submit', id, spec, inputs, scene, holders })
    } catch (err) {
      await this.store.deleteOrigin(id)
      throw err
    }
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
