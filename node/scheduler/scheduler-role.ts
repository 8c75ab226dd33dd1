import { randomBytes } from 'node:crypto'
import type { FarmNode } from '../farm-node.js'
import type { SiteClient } from '../site-client.js'
import type { JobStore } from '../../storage/job-store.js'
import { SCHEDULER_PROTOCOL, serveScheduler, type ControlRequest, type ReportRequest, type SchedulerRequest, type SubmitRequest } from '../../protocols/scheduler-rpc.js'
import { JobQueue } from './job-queue.js'
import { planDispatch, type PlannerHost, type PlannerJob } from './dispatch-planner.js'
import { parseFrameRange, chunkFrames } from '../jobs/frame-range.js'
import { jobRequirements } from '../jobs/job-spec.js'
import { explainMismatch, matchesRequirements } from '../jobs/requirements.js'
import { frameViews, isFinished, type JobRecord, type JobState, type TaskRecord } from '../jobs/job-model.js'
import { ApiError } from '../errors.js'

/**
 * The schedule server (the patent's FIGURES 5A–6B), run by the one node the
 * site chose. It keeps the queue in priority order (FIFO within a priority),
 * persists every change before acknowledging it, and pushes tasks into free
 * slots the moment they free up: a report of a finished frame triggers the
 * next dispatch at once, with no polling interval anywhere.
 *
 * Job state lives here; inputs and outputs live at the job's origin.
 */
export class NoMatchingHostError extends Error {
  constructor (message: string) { super(message); this.name = 'NoMatchingHostError' }
}

const HOST_FAILURES_TO_EXCLUDE = 2
const DISPATCH_COOLDOWN_MS = 500
/** how often running tasks are checked against what their hosts say they run */
const RECONCILE_MS = 10_000

export class SchedulerRole {
  private active = false
  private readonly queue = new JobQueue<JobRecord>()
  private readonly jobs = new Map<string, JobRecord>()
  private readonly tasks = new Map<string, TaskRecord[]>()
  /** task key → host, for tasks running anywhere */
  private readonly running = new Map<string, string>()
  private readonly cooldown = new Map<string, number>()
  private lock: Promise<unknown> = Promise.resolve()
  private pumpScheduled = false
  private activation?: Promise<void>
  private reconcileTimer?: NodeJS.Timeout
  /** tasks a host did not list at the last check; requeued if still missing at the next */
  private missing = new Set<string>()

  constructor (private readonly node: FarmNode, private readonly store: JobStore, private readonly client: SiteClient) {}

  async start (): Promise<void> {
    await this.node.membership.handle(SCHEDULER_PROTOCOL, async (stream, connection) => {
      const from = connection.remotePeer.toString()
      await serveScheduler(stream, async (req) => await this.answer(req, from))
    })
    this.client.local.scheduler = async (req, from) => await this.answer(req, from)
    this.node.table.on('change', (reason, peer) => { this.onTableChange(reason, peer) })
    this.onTableChange('update', this.node.peerId)
    this.reconcileTimer = setInterval(() => { void this.reconcile().catch(() => {}) }, RECONCILE_MS)
    this.reconcileTimer.unref()
  }

  stop (): void {
    if (this.reconcileTimer != null) clearInterval(this.reconcileTimer)
  }

  /**
   * A task we think runs on a host that does not list it (its report was
   * lost, or it was dispatched by us before a restart and the host restarted
   * too) would wait forever: ask every host what it runs, and requeue a task
   * missing at two checks in a row. Two checks leave time for a report in flight.
   */
  private async reconcile (): Promise<void> {
    if (!this.active) return
    const byHost = new Map<string, string[]>()
    for (const [k, h] of this.running) byHost.set(h, [...(byHost.get(h) ?? []), k])
    const stillMissing = new Set<string>()
    await Promise.all([...byHost].map(async ([host, keys]) => {
      let listed: Array<{ jobId: string, index: number, attemptId: string }>
      try { listed = await this.client.renderer(host, { op: 'running' }) } catch { return }
      const running = new Set(listed.map(t => `${t.jobId}#${t.index}@${t.attemptId}`))
      for (const k of keys) {
        const [jobId, index] = splitKey(k)
        const task = this.findTask(jobId, index)?.task
        if (task == null || task.state !== 'running' || running.has(`${k}@${task.attemptId ?? ''}`)) continue
        if (Date.now() - (task.dispatchedAt ?? 0) < RECONCILE_MS) continue
        stillMissing.add(`${k}@${task.attemptId ?? ''}`)
      }
    }))
    await this.serial(async () => {
      for (const m of stillMissing) {
        if (!this.missing.has(m)) continue
        const [k, attemptId] = m.split('@')
        const [jobId, index] = splitKey(k)
        const found = this.findTask(jobId, index)
        if (found == null || found.task.state !== 'running' || found.task.attemptId !== attemptId) continue
        this.running.delete(k)
        this.node.log.info(`job ${jobId}: task ${index} is not running on ${found.task.host ?? '?'}: requeued`)
        await this.failAttempt(found.job, found.task, found.task.host ?? '?', 'the host no longer runs this frame', false)
      }
    })
    this.missing = stillMissing
    this.schedulePump()
  }

  isActive (): boolean { return this.active }

  private serial<T> (fn: () => Promise<T>): Promise<T> {
    const p = this.lock.then(fn, fn)
    this.lock = p.catch(() => {})
    return p
  }

  private async ensureActive (): Promise<void> {
    if (this.node.schedulerId() !== this.node.peerId) throw new ApiError(`this node is not the scheduler (the scheduler is ${this.node.schedulerId() ?? 'unknown'})`, 503)
    if (!this.active) await this.activate()
  }

  private onTableChange (reason: 'join' | 'update' | 'leave', peer: string): void {
    const should = this.node.schedulerId() === this.node.peerId
    if (should && !this.active) void this.activate().catch((err: any) => { this.node.log.error(`scheduler activation failed: ${err.message}`) })
    if (!should && this.active) this.deactivate()
    if (!this.active) return
    if (reason === 'leave') void this.serial(async () => { await this.requeueHost(peer, `host ${peer} left the site`) })
    this.schedulePump()
  }

  /** Become the scheduler: rebuild the queue from what this node persisted. */
  private async activate (): Promise<void> {
    if (this.activation != null) return await this.activation
    this.activation = this.serial(async () => {
      const jobs = await this.store.allJobs()
      for (const job of jobs) {
        const tasks = await this.store.tasksOf(job.id)
        this.jobs.set(job.id, job)
        this.tasks.set(job.id, tasks)
        if (isFinished(job.state)) continue
        if (!this.queue.has(job.id)) this.queue.insert(job)
        for (const t of tasks) if (t.state === 'running' && t.host != null) this.running.set(key(t), t.host)
      }
      this.active = true
      this.node.log.info(`scheduling for site ${this.node.opts.site}: ${this.queue.size} unfinished job(s)`)
      // hosts that vanished while we were down: their tasks go back in the queue
      for (const host of new Set(this.running.values())) {
        if (!this.node.table.has(host)) await this.requeueHost(host, `host ${host} is gone`)
      }
    })
    try { await this.activation } finally { this.activation = undefined }
    this.schedulePump()
  }

  private deactivate (): void {
    this.active = false
    this.queue.ordered().forEach(j => this.queue.remove(j.id))
    this.jobs.clear(); this.tasks.clear(); this.running.clear()
  }

  private async answer (req: SchedulerRequest, from: string): Promise<unknown> {
    await this.ensureActive()
    switch (req.op) {
      case 'submit': return await this.serial(async () => await this.submit(req, from))
      case 'report': return await this.report(req, from)
      case 'jobs': return this.listJobs()
      case 'job': return await this.jobView(req.id)
      case 'control': return await this.serial(async () => await this.control(req))
    }
  }

  private async submit (req: SubmitRequest, origin: string): Promise<unknown> {
    if (this.jobs.has(req.id)) throw new ApiError(`job ${req.id} exists already`, 409)
    const spec = req.spec
    const frames = parseFrameRange(spec.frames)
    const requirements = jobRequirements(spec)
    const renderHosts = this.node.table.entries().filter(e => e.advert.roles.render && e.advert.fingerprint.slots.total > 0)
    const matching = renderHosts.filter(e => matchesRequirements(e.advert.fingerprint, requirements))
    if (matching.length === 0) {
      const why = renderHosts.map(e => `${e.advert.fingerprint.hostname}: ${explainMismatch(e.advert.fingerprint, requirements) ?? 'no free slots'}`)
      throw new NoMatchingHostError(`no host of site ${this.node.opts.site} can render this job${why.length > 0 ? ` (${why.join('; ')})` : ' (no host renders)'}`)
    }
    const chunks = chunkFrames(frames, spec.chunk)
    const job: JobRecord = {
      id: req.id, seq: await this.store.nextSeq(), name: spec.name, spec, requirements, inputs: req.inputs, scene: req.scene,
      origin, state: 'queued', priority: spec.priority, submittedAt: Date.now(), hostFailures: {}, excludedHosts: [],
      frameCount: frames.length, taskCount: chunks.length
    }
    const tasks: TaskRecord[] = chunks.map((c, index) => ({ jobId: job.id, index, frames: c.frames, state: 'queued', attempts: 0, triedHosts: [], progress: 0, errors: [] }))
    await this.store.createJob(job, tasks)
    this.jobs.set(job.id, job)
    this.tasks.set(job.id, tasks)
    this.queue.insert(job)
    this.node.log.info(`job ${job.id} (${job.name}) queued: ${frames.length} frames, priority ${job.priority}, ${matching.length} matching host(s)`)
    this.schedulePump()
    return { id: job.id, frames: frames.length, tasks: tasks.length, matchingHosts: matching.length }
  }

  private findTask (jobId: string, index: number): { job: JobRecord, task: TaskRecord } | undefined {
    const job = this.jobs.get(jobId)
    const task = this.tasks.get(jobId)?.[index]
    return job != null && task != null ? { job, task } : undefined
  }

  private async report (req: ReportRequest, from: string): Promise<unknown> {
    const found = this.findTask(req.jobId, req.index)
    if (found == null) return { accepted: false, reason: 'unknown task' }
    const { task } = found
    if (task.attemptId !== req.attemptId || task.host !== from) return { accepted: false, reason: 'stale attempt' }
    if (req.kind === 'progress' || req.kind === 'started') {
      // progress is volatile: kept in memory only, the frame's result is what is persisted
      if (req.kind === 'started') task.startedAt = Date.now()
      if (req.progress != null) task.progress = req.progress
      return { accepted: true }
    }
    return await this.serial(async () => {
      const again = this.findTask(req.jobId, req.index)
      if (again == null || again.task.attemptId !== req.attemptId || again.task.state !== 'running') return { accepted: false, reason: 'stale attempt' }
      const { job, task } = again
      this.running.delete(key(task))
      task.finishedAt = Date.now()
      task.stats = req.stats ?? task.stats
      task.logTail = req.logTail ?? task.logTail
      if (req.kind === 'done') {
        task.state = 'done'
        task.progress = 1
        task.outputs = req.outputs
        await this.store.putTasks([task])
        await this.maybeFinish(job)
      } else {
        await this.failAttempt(job, task, from, req.error ?? 'the renderer failed')
      }
      this.schedulePump()
      return { accepted: true }
    })
  }

  /** A failed attempt: retry elsewhere, exclude a host that failed twice, fail the job when retries run out. */
  private async failAttempt (job: JobRecord, task: TaskRecord, host: string, error: string, blameHost = true): Promise<void> {
    task.errors = [...task.errors, `${host}: ${error}`].slice(-10)
    if (!task.triedHosts.includes(host)) task.triedHosts.push(host)
    // a host that left or lost a frame is not a host that cannot render this job
    if (blameHost) job.hostFailures[host] = (job.hostFailures[host] ?? 0) + 1
    if ((job.hostFailures[host] ?? 0) >= HOST_FAILURES_TO_EXCLUDE && !job.excludedHosts.includes(host)) {
      job.excludedHosts.push(host)
      this.node.log.info(`job ${job.id}: host ${host} excluded after ${job.hostFailures[host]} failures`)
    }
    if (task.attempts >= job.spec.maxAttempts) {
      task.state = 'failed'
      await this.store.putTasks([task], job)
      await this.finish(job, 'failed', `frame ${task.frames[0]}${task.frames.length > 1 ? `-${task.frames[task.frames.length - 1]}` : ''} failed ${task.attempts} times; last error: ${error}`)
      return
    }
    task.state = 'queued'
    task.host = undefined
    task.attemptId = undefined
    task.progress = 0
    await this.store.putTasks([task], job)
  }

  private async requeueHost (host: string, reason: string): Promise<void> {
    for (const [k, h] of [...this.running]) {
      if (h !== host) continue
      this.running.delete(k)
      const [jobId, index] = splitKey(k)
      const found = this.findTask(jobId, index)
      if (found == null || found.task.state !== 'running') continue
      found.task.finishedAt = Date.now()
      this.node.log.info(`job ${jobId}: task ${index} requeued: ${reason}`)
      await this.failAttempt(found.job, found.task, host, reason, false)
    }
    this.schedulePump()
  }

  private async maybeFinish (job: JobRecord): Promise<void> {
    const tasks = this.tasks.get(job.id) ?? []
    if (tasks.every(t => t.state === 'done')) await this.finish(job, 'done')
  }

  private async finish (job: JobRecord, state: JobState, reason?: string): Promise<void> {
    job.state = state
    job.finishedAt = Date.now()
    job.reason = reason
    this.queue.remove(job.id)
    const tasks = this.tasks.get(job.id) ?? []
    const stop = tasks.filter(t => t.state === 'running')
    for (const t of tasks) {
      if (t.state === 'running' || t.state === 'queued') {
        if (state !== 'done') { t.state = 'failed'; t.errors = [...t.errors, reason ?? state].slice(-10) }
        this.running.delete(key(t))
      }
    }
    await this.store.putTasks(tasks, job)
    this.node.log.info(`job ${job.id} ${state}${reason != null ? `: ${reason}` : ''}`)
    for (const host of new Set(stop.map(t => t.host).filter((h): h is string => h != null))) {
      void this.client.renderer(host, { op: 'kill', term: 0, jobId: job.id }).catch(() => {})
    }
    void this.tellOrigin(job)
  }

  private async tellOrigin (job: JobRecord, attempt = 0): Promise<void> {
    try {
      await this.client.origin(job.origin, { op: 'finished', jobId: job.id, state: job.state as 'done', reason: job.reason, summary: this.summary(job) })
    } catch (err: any) {
      // the origin may be restarting: try again for a while
      if (attempt < 60) setTimeout(() => { void this.tellOrigin(job, attempt + 1) }, 2_000).unref()
      else this.node.log.error(`could not tell origin ${job.origin} that job ${job.id} finished: ${err.message}`)
    }
  }

  private async control (req: ControlRequest): Promise<unknown> {
    const job = this.jobs.get(req.id)
    if (job == null) throw new ApiError(`no job ${req.id}`, 404)
    const tasks = this.tasks.get(job.id) ?? await this.store.tasksOf(job.id)
    this.tasks.set(job.id, tasks)
    if (req.action === 'priority') {
      if (req.priority == null) throw new ApiError('priority: missing', 400)
      job.priority = req.priority
      if (this.queue.has(job.id)) this.queue.reprioritize(job.id, req.priority)
      await this.store.putJob(job)
      this.schedulePump()
      return { id: job.id, priority: job.priority }
    }
    if (req.action === 'kill') {
      if (isFinished(job.state)) return { id: job.id, state: job.state }
      await this.finish(job, 'killed', 'killed by request')
      return { id: job.id, state: job.state }
    }
    // retry: the named frames, or every frame that failed
    const wanted = req.frames != null ? new Set(parseFrameRange(req.frames)) : undefined
    const again = tasks.filter(t => t.state !== 'running' && (wanted != null ? t.frames.some(f => wanted.has(f)) : t.state === 'failed'))
    for (const t of again) {
      Object.assign(t, { state: 'queued', host: undefined, attemptId: undefined, attempts: 0, progress: 0, triedHosts: [], outputs: undefined })
    }
    if (again.length > 0 && isFinished(job.state)) {
      job.state = 'queued'; job.finishedAt = undefined; job.reason = undefined; job.excludedHosts = []; job.hostFailures = {}
      this.queue.insert(job)
    }
    await this.store.putTasks(again, job)
    this.schedulePump()
    return { id: job.id, retried: again.reduce((n, t) => n + t.frames.length, 0) }
  }

  private schedulePump (): void {
    if (this.pumpScheduled || !this.active) return
    this.pumpScheduled = true
    setImmediate(() => {
      this.pumpScheduled = false
      void this.serial(async () => { await this.pump() }).catch((err: any) => { this.node.log.error(`dispatch failed: ${err.message}`) })
    })
  }

  /** Fill every free slot that matches a queued task, most urgent job first. */
  private async pump (): Promise<void> {
    if (!this.active) return
    const now = Date.now()
    const busy = new Map<string, number>()
    for (const h of this.running.values()) busy.set(h, (busy.get(h) ?? 0) + 1)
    const hosts: PlannerHost[] = this.node.table.entries()
      .filter(e => e.advert.roles.render && e.advert.draining !== true && (this.cooldown.get(e.advert.peerId) ?? 0) < now)
      .map(e => ({ id: e.advert.peerId, fingerprint: e.advert.fingerprint, free: e.advert.fingerprint.slots.total - (busy.get(e.advert.peerId) ?? 0) }))
    const jobs: PlannerJob[] = this.queue.ordered().map(job => ({ job, queued: (this.tasks.get(job.id) ?? []).filter(t => t.state === 'queued') }))
    const plan = planDispatch(jobs, hosts)
    if (plan.length === 0) return
    const changedJobs = new Set<JobRecord>()
    for (const { task, host } of plan) {
      const job = this.jobs.get(task.jobId)
      if (job == null) continue
      Object.assign(task, { state: 'running', host, attemptId: randomBytes(6).toString('hex'), attempts: task.attempts + 1, progress: 0, dispatchedAt: now, startedAt: undefined, finishedAt: undefined })
      this.running.set(key(task), host)
      if (job.state === 'queued') { job.state = 'active'; job.startedAt = job.startedAt ?? now }
      changedJobs.add(job)
    }
    await this.store.putTasks(plan.map(p => p.task))
    for (const job of changedJobs) await this.store.putJob(job)
    for (const { task, host } of plan) void this.dispatch(task, host)
  }

  private async dispatch (task: TaskRecord, host: string): Promise<void> {
    const job = this.jobs.get(task.jobId)
    if (job == null) return
    const frames = parseFrameRange(job.spec.frames)
    const attemptId = task.attemptId
    try {
      const res = await this.client.renderer<{ accepted: boolean, reason?: string }>(host, {
        op: 'dispatch',
        term: 0,
        task: {
          jobId: job.id, index: task.index, attemptId: task.attemptId ?? '', frames: task.frames, origin: job.origin,
          renderer: job.spec.renderer.name, scene: job.scene, inputs: job.inputs, width: job.spec.width, height: job.spec.height,
          outputPattern: job.spec.outputPattern, command: job.spec.command, timeoutSec: job.spec.frameTimeoutSec,
          allowScripts: job.spec.allowScripts === true && host === job.origin, jobStart: frames[0], jobEnd: frames[frames.length - 1]
        }
      })
      if (res.accepted) return
      throw new Error(res.reason ?? 'refused')
    } catch (err: any) {
      // not the frame's fault: put it back without counting the attempt
      this.node.log.debug(`dispatch of ${job.id}/${task.index} to ${host} failed: ${err.message}`)
      this.cooldown.set(host, Date.now() + DISPATCH_COOLDOWN_MS)
      setTimeout(() => { this.schedulePump() }, DISPATCH_COOLDOWN_MS + 10).unref()
      await this.serial(async () => {
        if (task.attemptId !== attemptId || task.state !== 'running') return
        this.running.delete(key(task))
        Object.assign(task, { state: 'queued', host: undefined, attemptId: undefined, attempts: task.attempts - 1, dispatchedAt: undefined })
        await this.store.putTasks([task])
      })
      this.schedulePump()
    }
  }

  private summary (job: JobRecord): Record<string, unknown> {
    const tasks = this.tasks.get(job.id) ?? []
    const frames = frameViews(tasks)
    const cpu = tasks.reduce((s, t) => s + (t.stats?.cpuSeconds ?? 0), 0)
    return {
      id: job.id, name: job.name, state: job.state, priority: job.priority, user: job.spec.user, group: job.spec.group,
      origin: job.origin, renderer: job.spec.renderer.name,
      frames: { total: frames.length, done: frames.filter(f => f.state === 'done').length, running: frames.filter(f => f.state === 'running').length, failed: frames.filter(f => f.state === 'failed').length, queued: frames.filter(f => f.state === 'queued').length },
      submittedAt: job.submittedAt, startedAt: job.startedAt, finishedAt: job.finishedAt, reason: job.reason,
      cpuSeconds: cpu, hosts: [...new Set(tasks.map(t => t.host).filter(Boolean))]
    }
  }

  private listJobs (): unknown[] {
    const order = new Map(this.queue.ordered().map((j, i) => [j.id, i]))
    return [...this.jobs.values()]
      .sort((a, b) => (order.get(a.id) ?? Infinity) - (order.get(b.id) ?? Infinity) || (b.finishedAt ?? 0) - (a.finishedAt ?? 0))
      .map(j => ({ ...this.summary(j), queuePosition: order.has(j.id) ? (order.get(j.id) ?? 0) + 1 : null }))
  }

  private async jobView (id: string): Promise<unknown> {
    const job = this.jobs.get(id)
    if (job == null) throw new ApiError(`no job ${id} at the scheduler`, 404)
    const tasks = this.tasks.get(id) ?? await this.store.tasksOf(id)
    return {
      ...this.summary(job), spec: job.spec, requirements: job.requirements, excludedHosts: job.excludedHosts,
      frames: frameViews(tasks),
      tasks: tasks.map(t => ({ index: t.index, frames: t.frames, state: t.state, host: t.host ?? null, attempts: t.attempts, progress: t.progress, errors: t.errors, logTail: t.logTail ?? [], stats: t.stats ?? null, startedAt: t.startedAt ?? null, finishedAt: t.finishedAt ?? null, outputs: t.outputs ?? [] }))
    }
  }
}

const key = (t: TaskRecord): string => `${t.jobId}#${t.index}`
function splitKey (k: string): [string, number] {
  const i = k.lastIndexOf('#')
  return [k.slice(0, i), Number(k.slice(i + 1))]
}
