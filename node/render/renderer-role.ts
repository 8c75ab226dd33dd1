import { mkdir, rm, stat } from 'node:fs/promises'
import { createHash } from 'node:crypto'
import { createReadStream } from 'node:fs'
import { basename, dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { FarmNode } from '../farm-node.js'
import type { SiteClient } from '../site-client.js'
import type { BlobStore } from '../../storage/blob-store.js'
import { RENDER_PROTOCOL, serveRenderer, type DispatchTask, type RenderRequest, type RunningTask } from '../../protocols/render-rpc.js'
import { fetchBlob } from '../../protocols/blob.js'
import { adapterFor } from '../renderers/registry.js'
import { runTask, type TaskResult } from '../renderers/run-task.js'
import type { RenderTask } from '../renderers/adapter.js'
import type { ReportRequest } from '../../protocols/scheduler-rpc.js'
import type { Election } from '../scheduler/election.js'
import { PendingOutputs } from './pending-outputs.js'
import { bwrapWrap, checkSandboxOutputs, farmeshInstallPaths, sandboxStatus } from '../sandbox/bwrap.js'
import type { CommandLine } from '../renderers/adapter.js'
import { Availability } from './availability.js'

/**
 * The render server of one host (the patent's FIGURE 2): N slots, each
 * running one task at a time as a child process. A task pushed by the
 * scheduler fetches the inputs it lacks from the job's origin by hash
 * (cached and verified), renders, streams every output back to the origin,
 * and only then reports the task done, so "done" always means "stored at the
 * origin". Slot changes reach the site's resource tables at once.
 */
export interface OutputSink {
  /** store an output at the origin; false when a copy was already stored there */
  (origin: string, header: { jobId: string, frame: number, name: string, size: number, hash: string, attempt: string, host: string }, file: string, signal: AbortSignal): Promise<boolean>
}

interface Running { task: DispatchTask, abort: AbortController, progress: number, handedBack?: boolean }

const BUILTIN_CLI = join(dirname(fileURLToPath(import.meta.url)), '..', 'renderers', 'builtin-cli.js')
const REPORT_RETRY_MS = 1_000
const REPORT_GIVE_UP_MS = 10 * 60_000
/** how long an output push to the origin may take before it is kept for later */
const ORIGIN_TIMEOUT_MS = 20_000

/** lines of a running frame's output sent with its progress */
const LIVE_LOG_LINES = 10

export class RendererRole {
  private readonly running = new Map<string, Running>()
  /** finished here, result not yet acknowledged by a scheduler: still ours, so a new scheduler must not requeue it */
  private readonly reporting = new Map<string, Running>()
  private readonly inputsReady = new Map<string, Promise<string>>()
  private stopped = false

  private readonly pending: PendingOutputs
  readonly availability: Availability

  constructor (private readonly node: FarmNode, private readonly blobs: BlobStore, private readonly client: SiteClient, private readonly outputs: OutputSink, private readonly election: Election) {
    this.pending = new PendingOutputs(join(node.dir.root, 'pending'), outputs, node.log)
    this.availability = new Availability({ workstation: node.opts.workstation, sleep: node.opts.sleep })
  }

  get slots (): number { return this.node.opts.render ? this.node.opts.slots : 0 }

  async start (): Promise<void> {
    await this.node.membership.handle(RENDER_PROTOCOL, async (stream, connection) => {
      const from = connection.remotePeer.toString()
      await serveRenderer(stream, async (req) => await this.answer(req, from))
    })
    this.client.local.renderer = async (req, from) => await this.answer(req, from)
    this.pending.start()
    this.node.membership.on('join', (peer) => { void this.pending.flush(peer) })
    this.availability.on('change', (paused) => {
      this.node.log.info(paused == null ? 'taking frames again' : `taking no new frames: ${paused}`)
      this.node.advertiser.update({ paused })
    })
    this.availability.on('handBack', () => {
      for (const r of this.running.values()) { r.handedBack = true; r.abort.abort() }
      if (this.running.size > 0) this.node.log.info(`handed ${this.running.size} running frame(s) back to the queue`)
    })
    this.availability.start()
  }

  async stop (): Promise<void> {
    this.stopped = true
    this.pending.stop()
    this.availability.stop()
    for (const r of this.running.values()) r.abort.abort()
  }

  list (): RunningTask[] {
    return [...this.running.values(), ...this.reporting.values()].map(r => ({ jobId: r.task.jobId, index: r.task.index, attemptId: r.task.attemptId, progress: r.progress }))
  }

  private async answer (req: RenderRequest, from: string): Promise<unknown> {
    // fencing: a scheduler of an older term than we have seen is deposed
    if (req.op === 'dispatch' || req.op === 'kill') {
      if (!this.election.accepts(req.term)) {
        this.node.log.info(`refused ${req.op} from ${from}: term ${req.term} is older than ${this.election.currentTerm()}`)
        return { accepted: false, reason: `stale term ${req.term} (current ${this.election.currentTerm()})`, killed: 0 }
      }
      this.election.observe(req.term)
    }
    switch (req.op) {
      case 'running': return this.list()
      case 'host': {
        this.node.log.info(`${req.action} requested by ${from}`)
        if (req.action === 'nimby-on' || req.action === 'nimby-off') {
          this.availability.setLocked(req.action === 'nimby-on')
          return { locked: this.availability.isLocked() }
        }
        if (req.action === 'stop') { setTimeout(() => { process.kill(process.pid, 'SIGTERM') }, 100); return { stopping: true } }
        // a draining host finishes its frames and takes no more
        this.node.advertiser.update({ draining: req.action === 'drain' })
        return { draining: req.action === 'drain' }
      }
      case 'kill': {
        let killed = 0
        for (const r of this.running.values()) {
          if (r.task.jobId === req.jobId && (req.index == null || r.task.index === req.index)) { r.abort.abort(); killed++ }
        }
        return { killed }
      }
      case 'dispatch': {
        if (this.node.advertiser.current().draining === true) return { accepted: false, reason: 'this host is draining' }
        const paused = this.availability.paused()
        if (paused != null) return { accepted: false, reason: `this host takes no frames now (${paused})` }
        if (this.stopped || this.running.size >= this.slots) return { accepted: false, reason: `no free slot (${this.running.size}/${this.slots} busy)` }
        const k = `${req.task.jobId}#${req.task.index}`
        if (this.running.has(k)) return { accepted: false, reason: 'task already running here' }
        const r: Running = { task: req.task, abort: new AbortController(), progress: 0 }
        this.running.set(k, r)
        this.node.advertiser.setSlotsBusy(this.running.size)
        void this.execute(r).then(async (final) => {
          // free the slot before reporting: the report makes the scheduler refill it at once
          this.running.delete(k)
          this.node.advertiser.setSlotsBusy(this.running.size)
          if (final == null) return
          this.reporting.set(k, r)
          try { await this.report(final) } finally { if (this.reporting.get(k) === r) this.reporting.delete(k) }
        })
        return { accepted: true }
      }
    }
  }

  /** Run the task; resolves with the final report to send, or undefined when it was killed. */
  private async execute (r: Running): Promise<ReportRequest | undefined> {
    const { task } = r
    const base: Omit<ReportRequest, 'kind'> = { op: 'report', jobId: task.jobId, index: task.index, attemptId: task.attemptId }
    let result: TaskResult | undefined
    try {
      const inputDir = await this.prepareInputs(task, r.abort.signal)
      const outputDir = join(this.node.dir.work, task.jobId, 'out', `${task.index}-${task.attemptId}`)
      await mkdir(outputDir, { recursive: true })
      void this.report({ ...base, kind: 'started' }, false)
      result = await this.render(r, inputDir, outputDir)
      if (!result.ok) {
        if (r.handedBack === true) return { ...base, kind: 'failed', error: 'handed back: the host\'s user needs it', handedBack: true }
        if (r.abort.signal.aborted) return undefined
        return { ...base, kind: 'failed', error: result.error ?? (result.missing.length > 0 ? `no output written: ${result.missing.map(m => basename(m)).join(', ')}` : `exit code ${String(result.exitCode)}`), logTail: result.logTail, stats: stats(result) }
      }
      if (task.sandbox != null) {
        // a sandboxed job controls its output directory: links or devices there must never leave this host
        const check = await checkSandboxOutputs(outputDir, result.outputs)
        if (check.refused.length > 0) return { ...base, kind: 'failed', error: `refused outputs: ${check.refused.map(r => `${basename(r.path)} (${r.reason})`).join(', ')}`, logTail: result.logTail, stats: stats(result) }
      }
      const names: string[] = []
      let delivered = true
      for (const [i, file] of result.outputs.entries()) {
        const hash = await sha256File(file)
        const { size } = await stat(file)
        const header = { jobId: task.jobId, frame: task.frames[Math.min(i, task.frames.length - 1)], name: basename(file), size, hash, attempt: task.attemptId, host: this.node.peerId }
        try {
          // an origin gone from the site's table cannot take it now: keep it without waiting out a dead connection
          if (task.origin !== this.node.peerId && !this.node.table.has(task.origin)) throw new Error('origin not in the site')
          await this.outputs(task.origin, header, file, AbortSignal.any([r.abort.signal, AbortSignal.timeout(ORIGIN_TIMEOUT_MS)]))
        } catch (err: any) {
          if (r.abort.signal.aborted || err.name === 'OutputRefusedError') throw err
          // the origin is unreachable: keep the output here and deliver it when it is back
          await this.pending.keep(task.origin, header, file)
          delivered = false
        }
        names.push(basename(file))
      }
      await rm(outputDir, { recursive: true, force: true })
      return { ...base, kind: 'done', logTail: result.logTail, stats: stats(result), outputs: names, delivered }
    } catch (err: any) {
      if (r.handedBack === true) return { ...base, kind: 'failed', error: 'handed back: the host\'s user needs it', handedBack: true }
      if (r.abort.signal.aborted) return undefined // killed: the scheduler already knows
      return { ...base, kind: 'failed', error: err.message, logTail: result?.logTail, stats: result != null ? stats(result) : undefined }
    }
  }

  /** Render the task; a chunk with a frame step runs one process per frame. */
  private async render (r: Running, inputDir: string, outputDir: string): Promise<TaskResult> {
    const { task } = r
    const adapter = adapterFor(task.renderer, { builtinCli: BUILTIN_CLI })
    const contiguous = task.frames.every((f, i) => i === 0 || f === task.frames[i - 1] + 1)
    const ranges = contiguous ? [[task.frames[0], task.frames[task.frames.length - 1]]] : task.frames.map(f => [f, f])
    let last: TaskResult | undefined
    const all: string[] = []
    const wrap = await this.sandboxFor(task, inputDir, outputDir)
    for (const [n, [start, end]] of ranges.entries()) {
      const rt: RenderTask = {
        scene: join(inputDir, task.scene), inputDir, outputDir, start, end,
        clockStart: task.jobStart, clockEnd: task.jobEnd,
        width: task.width, height: task.height, outputPattern: task.outputPattern, command: task.command, allowScripts: task.allowScripts
      }
      let lastSent = 0
      const live: string[] = []
      // progress and the last lines printed go to the scheduler at most twice a second (volatile there)
      const send = (): void => {
        const now = Date.now()
        if (now - lastSent < 500) return
        lastSent = now
        void this.report({ op: 'report', jobId: task.jobId, index: task.index, attemptId: task.attemptId, kind: 'progress', progress: r.progress, logTail: live.slice() }, false)
      }
      last = await runTask(adapter, rt, {
        signal: r.abort.signal,
        timeoutMs: task.timeoutSec != null ? task.timeoutSec * 1000 * (end - start + 1) : undefined,
        maxRssBytes: task.memory,
        wrap,
        onProgress: (p) => { r.progress = (n + p) / ranges.length; send() },
        onLine: (line) => { live.push(line.slice(0, 1000)); if (live.length > LIVE_LOG_LINES) live.shift(); send() }
      })
      all.push(...last.outputs)
      if (!last.ok) return last
    }
    return { ...(last as TaskResult), outputs: all }
  }

  /**
   * A job from another site runs in bubblewrap: only its own inputs
   * (read-only) and outputs visible, no network, its own PID namespace. A
   * host without bubblewrap refuses it unless its operator allowed
   * unsandboxed remote work explicitly.
   */
  private async sandboxFor (task: DispatchTask, inputDir: string, outputDir: string): Promise<((cmd: CommandLine) => CommandLine) | undefined> {
    if (task.sandbox == null) return undefined
    const status = await sandboxStatus()
    if (!status.available) {
      if (this.node.opts.allowUnsandboxed === true) return undefined
      throw new Error('this host has no working bubblewrap sandbox for remote jobs (start it with --allow-unsandboxed to accept them anyway)')
    }
    return bwrapWrap({
      jobDir: join(this.node.dir.work, task.jobId),
      inputDir,
      outputDir,
      pathMap: task.sandbox.pathMap.map(m => ({ original: m.original, inside: join(inputDir, ...m.inside.split('/')) })),
      hidden: [this.node.dir.root],
      allowRead: farmeshInstallPaths(),
      disableUserns: status.userns
    })
  }

  /**
   * Materialize the job's inputs once per job: fetched by hash from the
   * origin or, when it is off, from a node holding a copy; verified on
   * arrival; hard-linked into the job's directory.
   */
  private async prepareInputs (task: DispatchTask, signal: AbortSignal): Promise<string> {
    const dir = join(this.node.dir.work, task.jobId, 'in')
    let ready = this.inputsReady.get(task.jobId)
    if (ready == null) {
      ready = (async () => {
        for (const input of task.inputs) {
          if (!(await this.blobs.has(input.hash))) await this.fetchFromHolders(task, input.hash, signal)
          await this.blobs.materialize(input.hash, join(dir, ...input.path.split('/')))
        }
        return dir
      })()
      this.inputsReady.set(task.jobId, ready)
      ready.catch(() => { this.inputsReady.delete(task.jobId) })
    }
    return await ready
  }

  private async fetchFromHolders (task: DispatchTask, hash: string, signal: AbortSignal): Promise<void> {
    const holders = [...new Set([task.origin, ...task.holders])].filter(h => h !== this.node.peerId)
    const errors: string[] = []
    for (const holder of holders) {
      try {
        const conn = await this.client.connection(holder, AbortSignal.any([signal, AbortSignal.timeout(5_000)]))
        await fetchBlob(conn, hash, this.blobs, { signal })
        return
      } catch (err: any) {
        if (signal.aborted) throw err
        errors.push(`${holder}: ${err.message}`)
      }
    }
    throw new Error(`input ${hash.slice(0, 12)} unavailable from every holder (${errors.join('; ')})`)
  }

  /**
   * Tell the scheduler. Results are retried until the scheduler answers; a
   * scheduler that does not know the job (another node standing in while
   * the real one restarts) is asked again too. Progress is best effort.
   */
  private async report (req: ReportRequest, retry = true): Promise<void> {
    const deadline = Date.now() + REPORT_GIVE_UP_MS
    while (true) {
      let why: string
      try {
        const res = await this.client.scheduler<{ accepted: boolean, reason?: string }>(req)
        if (res.accepted || res.reason !== 'unknown task') return
        why = 'the scheduler does not know this job (yet)'
      } catch (err: any) {
        why = err.message
      }
      if (!retry || this.stopped || Date.now() > deadline) {
        if (retry) this.node.log.error(`could not report ${req.jobId}/${req.index} ${req.kind}: ${why}`)
        return
      }
      await new Promise(resolve => setTimeout(resolve, REPORT_RETRY_MS))
    }
  }
}

function stats (r: TaskResult): ReportRequest['stats'] {
  return { exitCode: r.exitCode, cpuSeconds: r.cpuSeconds, peakRssBytes: r.peakRssBytes, ioReadBytes: r.ioReadBytes, ioWriteBytes: r.ioWriteBytes, wallSeconds: r.wallSeconds }
}

async function sha256File (file: string): Promise<string> {
  const h = createHash('sha256')
  for await (const chunk of createReadStream(file)) h.update(chunk as Buffer)
  return h.digest('hex')
}

