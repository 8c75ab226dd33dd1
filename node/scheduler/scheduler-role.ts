import { randomBytes } from 'node:crypto'
import type { FarmNode } from '../farm-node.js'
import type { SiteClient } from '../site-client.js'
import type { JobStore } from '../../storage/job-store.js'
import type { Election } from './election.js'
import type { Replicator } from './replication.js'
import { SCHEDULER_PROTOCOL, serveScheduler, type ControlRequest, type ReportRequest, type SchedulerRequest, type SubmitRequest } from '../../protocols/scheduler-rpc.js'
import type { RunningTask } from '../../protocols/render-rpc.js'
import { JobQueue } from './job-queue.js'
import { planDispatch, type PlannerHost, type PlannerJob, type PlanPolicy } from './dispatch-planner.js'
import { parseFrameRange, chunkFrames } from '../jobs/frame-range.js'
import { jobRequirements } from '../jobs/job-spec.js'
import { explainMismatch, matchesRequirements } from '../jobs/requirements.js'
import { frameViews, isFinished, type JobRecord, type JobState, type SiteLimit, type TaskRecord } from '../jobs/job-model.js'
import { MEMORY_LIMIT_ERROR } from '../renderers/run-task.js'
import { globMatches } from '../jobs/requirements.js'
import { hostAllowed, shareKey } from './dispatch-planner.js'
import { waitingReason } from './wait-reasons.js'
import { jobWins, taskWins } from './replica-merge.js'
import { ApiError } from '../errors.js'

/**
 * The schedule server (the patent's FIGURES 5A–6B), run by the node the site
 * elected (election.ts). It keeps the queue in priority order (FIFO within a
 * priority) and pushes tasks into free slots the moment they free up: a
 * report of a finished frame triggers the next dispatch at once, with no
 * polling interval anywhere.
 *
 * Every change is stamped with the scheduler's term, stored, and replicated
 * to the other nodes (replication.ts); submissions and frame results are
 * acknowledged only once a second host holds them. A new scheduler rebuilds
 * the queue from its replica and asks every host what it is rendering,
 * adopting running frames instead of restarting them.
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
  /** job id → hosts running its frames, with how many each: kept with `running` (the machine limit and fair share read it on every plan) */
  private readonly jobHosts = new Map<string, Map<string, number>>()
  private readonly cooldown = new Map<string, number>()
  private readonly limits = new Map<string, SiteLimit>()
  private lock: Promise<unknown> = Promise.resolve()
  private pumpScheduled = false
  private reconcileTimer?: NodeJS.Timeout
  /** tasks a host did not list at the last check; requeued if still missing at the next */
  private missing = new Set<string>()
  private counter = 0
  /** first-dispatch hook for benchmarks and logs: term → time of the first dispatch in it */
  firstDispatchAt?: number

  constructor (private readonly node: FarmNode, private readonly store: JobStore, private readonly client: SiteClient, private readonly election: Election, private readonly replicator: Replicator) {}

  async start (): Promise<void> {
    await this.node.membership.handle(SCHEDULER_PROTOCOL, async (stream, connection) => {
      const from = connection.remotePeer.toString()
      await serveScheduler(stream, async (req) => await this.answer(req, from))
    })
    this.client.local.scheduler = async (req, from) => await this.answer(req, from)
    this.election.on('change', () => { this.onLeaderChange() })
    this.node.table.on('change', (reason, peer) => {
      if (!this.active) return
      if (reason === 'leave') void this.serial(async () => { await this.requeueHost(peer, `host ${peer} left the site`) })
      this.schedulePump()
    })
    this.onLeaderChange()
    this.reconcileTimer = setInterval(() => { void this.reconcile(false).catch(() => {}) }, RECONCILE_MS)
    this.reconcileTimer.unref()
  }

  stop (): void {
    if (this.reconcileTimer != null) clearInterval(this.reconcileTimer)
    this.deactivate()
  }

  isActive (): boolean { return this.active }

  private serial<T> (fn: () => Promise<T>): Promise<T> {
    const p = this.lock.then(fn, fn)
    this.lock = p.catch(() => {})
    return p
  }

  private onLeaderChange (): void {
    const leader = this.election.isLeader()
    if (leader && !this.active) void this.activate().catch((err: any) => { this.node.log.error(`scheduler activation failed: ${err.message}`) })
    if (!leader && this.active) {
      this.node.log.info(`no longer scheduling: the site's scheduler is ${this.election.leader() ?? 'unknown'} (term ${this.election.currentTerm()})`)
      this.deactivate()
    }
  }

  private ensureActive (): void {
    if (!this.active || !this.election.isLeader()) {
      throw new ApiError(`this node is not the scheduler (the scheduler is ${this.election.leader() ?? 'not elected yet'})`, 503)
    }
  }

  /** Become the scheduler: rebuild the queue from this node's replica, then reconcile with the hosts. */
  private async activate (): Promise<void> {
    await this.serial(async () => {
      if (this.active) return
      this.counter = 0
      for (const l of await this.store.allLimits()) this.limits.set(l.name, l)
      for (const job of await this.store.allJobs()) {
        const tasks = await this.store.tasksOf(job.id)
        this.jobs.set(job.id, job)
        this.tasks.set(job.id, tasks)
        if (isFinished(job.state)) continue
        this.queue.insert(job)
        for (const t of tasks) if (t.state === 'running' && t.host != null) this.setRunning(key(t), t.host)
      }
      this.active = true
      this.replicator.setMergeListener((jobs, tasks, limits) => { void this.serial(async () => { this.applyMerged(jobs, tasks, limits) }) })
      this.node.log.info(`scheduling for site ${this.node.opts.site} in term ${this.election.currentTerm()}: ${this.queue.size} unfinished job(s)`)
    })
    await this.reconcile(true)
    this.schedulePump()
  }

  private deactivate (): void {
    this.active = false
    this.replicator.setMergeListener(undefined)
    for (const j of this.queue.ordered()) this.queue.remove(j.id)
    this.jobs.clear(); this.tasks.clear(); this.running.clear(); this.jobHosts.clear(); this.missing.clear(); this.limits.clear()
  }

  /** Records merged from other nodes (a healed partition, a late replica) replace ours when newer. */
  private applyMerged (jobs: JobRecord[], tasks: TaskRecord[], limits: SiteLimit[] = []): void {
    if (!this.active) return
    for (const l of limits) this.limits.set(l.name, l)
    for (const j of jobs) {
      const mine = this.jobs.get(j.id)
      if (!jobWins(mine, j)) continue
      this.jobs.set(j.id, j)
      if (!this.tasks.has(j.id)) this.tasks.set(j.id, [])
      if (this.queue.has(j.id)) this.queue.remove(j.id)
      if (!isFinished(j.state)) this.queue.insert(j)
    }
    for (const t of tasks) {
      const list = this.tasks.get(t.jobId)
      if (list == null) continue
      if (!taskWins(list[t.index], t)) continue
      list[t.index] = t
      if (t.state === 'running' && t.host != null) this.setRunning(key(t), t.host)
      else this.unsetRunning(key(t))
    }
    for (const j of jobs) void this.maybeFinish(j.id)
    this.schedulePump()
  }

  /** Stamp, store, replicate. `durable`: wait until a second host holds it. */
  private async commit (jobs: JobRecord[], tasks: TaskRecord[], durable: boolean): Promise<void> {
    const term = this.election.currentTerm()
    for (const r of [...jobs, ...tasks]) r.ver = { term, n: ++this.counter }
    const copy = structuredClone({ jobs, tasks })
    await this.store.putTasks(tasks)
    for (const j of jobs) await this.store.putJob(j)
    await this.replicator.put(copy.jobs, copy.tasks, durable)
  }

  private async answer (req: SchedulerRequest, from: string): Promise<unknown> {
    this.ensureActive()
    switch (req.op) {
      case 'submit': return await this.serial(async () => await this.submit(req, from))
      case 'report': return await this.report(req, from)
      case 'jobs': return this.listJobs()
      case 'job': return await this.jobView(req.id)
      case 'control': return await this.serial(async () => await this.control(req))
      case 'remote-frames': return await this.serial(async () => await this.remoteFrames(req.id, req.frames, from))
      case 'limits': return req.set != null ? await this.serial(async () => await this.setLimit(req.set!.name, req.set!.count)) : this.limitsView()
    }
  }

  private async submit (req: SubmitRequest, origin: string): Promise<unknown> {
    if (this.jobs.has(req.id)) throw new ApiError(`job ${req.id} exists already`, 409)
    const spec = req.spec
    const frames = parseFrameRange(spec.frames)
    const requirements = jobRequirements(spec)
    const renderHosts = this.node.table.entries().filter(e => e.advert.roles.render && e.advert.fingerprint.slots.total > 0)
    const matching = renderHosts.filter(e => matchesRequirements(e.advert.fingerprint, requirements))
    // an outsourced job is rendered elsewhere: our hosts need not match it
    if (matching.length === 0 && req.outsourceTo == null) {
      const why = renderHosts.map(e => `${e.advert.fingerprint.hostname}: ${explainMismatch(e.advert.fingerprint, requirements) ?? 'no free slots'}`)
      throw new NoMatchingHostError(`no host of site ${this.node.opts.site} can render this job${why.length > 0 ? ` (${why.join('; ')})` : ' (no host renders)'}`)
    }
    if (req.outsourceTo == null) this.checkPolicies(spec, req.id, matching.map(e => ({ id: e.advert.peerId, hostname: e.advert.fingerprint.hostname })))
    const chunks = chunkFrames(frames, spec.chunk)
    const job: JobRecord = {
      id: req.id, seq: await this.nextSeq(), name: spec.name, spec, requirements, inputs: req.inputs, scene: req.scene,
      origin, state: 'queued', priority: spec.priority, submittedAt: Date.now(), hostFailures: {}, excludedHosts: [],
      frameCount: frames.length, taskCount: chunks.length, holders: req.holders ?? [origin],
      ...(req.outsourceTo != null ? { outsourcedTo: req.outsourceTo } : {}),
      ...(req.sandbox === true ? { sandbox: true } : {})
    }
    const tasks: TaskRecord[] = chunks.map((c, index) => ({ jobId: job.id, index, frames: c.frames, state: 'queued', attempts: 0, triedHosts: [], progress: 0, errors: [] }))
    await this.commit([job], tasks, true)
    this.jobs.set(job.id, job)
    this.tasks.set(job.id, tasks)
    this.queue.insert(job)
    this.node.log.info(`job ${job.id} (${job.name}) queued: ${frames.length} frames, priority ${job.priority}, ${matching.length} matching host(s)`)
    this.schedulePump()
    return { id: job.id, frames: frames.length, tasks: tasks.length, matchingHosts: matching.length }
  }

  /**
   * Refuse at submit what could never run as asked: an unknown dependency, a
   * dependency cycle, a limit that is not set, a host glob matching no host.
   */
  private checkPolicies (spec: SubmitRequest['spec'], id: string, hosts: Array<{ id: string, hostname: string }>): void {
    const fail = (field: string, msg: string): never => { throw Object.assign(new ApiError(`${field}: ${msg}`, 400), { field }) }
    const deps = [...(spec.after ?? []), ...(spec.afterFrames != null ? [spec.afterFrames] : [])]
    for (const d of deps) if (!this.jobs.has(d)) fail(spec.afterFrames === d ? 'afterFrames' : 'after', `no job ${d} in this site`)
    // the new job's own id cannot be reached from its dependencies unless they form a cycle
    const seen = new Set<string>()
    const walk = (jid: string): void => {
      if (jid === id) fail('after', `job ${id} would wait for itself`)
      if (seen.has(jid)) return
      seen.add(jid)
      const j = this.jobs.get(jid)
      for (const d of [...(j?.spec.after ?? []), ...(j?.spec.afterFrames != null ? [j.spec.afterFrames] : [])]) walk(d)
    }
    deps.forEach(walk)
    for (const u of spec.uses ?? []) if (!this.limits.has(u)) fail('uses', `no limit ${u} is set in this site (farmesh limits set ${u} COUNT)`)
    const all = this.node.table.entries().map(e => [e.advert.peerId, e.advert.fingerprint.hostname])
    for (const [field, globs] of [['hosts', spec.hosts ?? []], ['denyHosts', spec.denyHosts ?? []]] as const) {
      for (const g of globs) if (!all.some(names => names.some(n => globMatches(n, g)))) fail(field, `${JSON.stringify(g)} matches no host of the site`)
    }
    if ((spec.hosts?.length ?? 0) > 0 && !hosts.some(h => spec.hosts!.some(g => globMatches(h.id, g) || globMatches(h.hostname, g)))) {
      fail('hosts', 'no allowed host can render this job')
    }
  }

  private async setLimit (name: string, count: number): Promise<unknown> {
    const limit: SiteLimit = { name, count, ver: { term: this.election.currentTerm(), n: ++this.counter } }
    this.limits.set(name, limit)
    await this.store.putLimit(limit)
    await this.replicator.put([], [], true, [limit])
    this.schedulePump()
    return this.limitsView().find(l => l.name === name)
  }

  /** Each limit with its use and holders: `farmesh limits`. */
  private limitsView (): Array<{ name: string, count: number, inUse: number, holders: Array<{ job: string, frames: number[], host: string }> }> {
    return [...this.limits.values()].sort((a, b) => a.name.localeCompare(b.name)).map(l => {
      const holders: Array<{ job: string, frames: number[], host: string }> = []
      for (const [k, host] of this.running) {
        const [jobId, index] = splitKey(k)
        const found = this.findTask(jobId, index)
        if (found?.job.spec.uses?.includes(l.name) === true) holders.push({ job: jobId, frames: found.task.frames, host })
      }
      return { name: l.name, count: l.count, inUse: holders.length, holders }
    })
  }

  /**
   * Frame states of an outsourced job, from its origin: running and queued as
   * the remote site reports them, done once the output is stored at the
   * origin. A frame already done here stays done (committed once).
   */
  private async remoteFrames (id: string, frames: Array<{ frame: number, state: TaskRecord['state'], host: string | null, attempts: number, progress: number, logTail?: string[] }>, from: string): Promise<unknown> {
    const job = this.jobs.get(id)
    if (job == null) throw new ApiError(`no job ${id}`, 404)
    if (from !== job.origin) throw new ApiError('only the job\'s origin reports remote frames', 403)
    const byFrame = new Map<number, TaskRecord>()
    for (const t of this.tasks.get(id) ?? []) for (const f of t.frames) byFrame.set(f, t)
    const changed = new Set<TaskRecord>()
    for (const u of frames) {
      const t = byFrame.get(u.frame)
      if (t == null) continue
      // a done frame stays done; its log tail may come after its output
      if (t.state === 'done') { if (u.logTail != null && u.logTail.join('\n') !== (t.logTail ?? []).join('\n')) { t.logTail = u.logTail; changed.add(t) } continue }
      Object.assign(t, { state: u.state, host: u.host ?? undefined, attempts: u.attempts, progress: u.progress, ...(u.logTail != null ? { logTail: u.logTail } : {}) })
      if (u.state === 'done') t.finishedAt = Date.now()
      changed.add(t)
    }
    if (changed.size === 0) return { changed: 0 }
    if (job.state === 'queued') { job.state = 'active'; job.startedAt = Date.now() }
    await this.commit([job], [...changed], [...changed].some(t => t.state === 'done'))
    await this.maybeFinish(job.id)
    return { changed: changed.size }
  }

  /** FIFO order within a priority survives a change of scheduler: seq comes from submission time. */
  private async nextSeq (): Promise<number> {
    const last = Math.max(0, ...[...this.jobs.values()].map(j => j.seq))
    return Math.max(last + 1, Date.now())
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
    const current = task.attemptId === req.attemptId && task.host === from
    if (req.kind === 'progress' || req.kind === 'started') {
      // progress is volatile: kept in memory only, the frame's result is what is persisted
      if (!current) return { accepted: false, reason: 'stale attempt' }
      if (req.kind === 'started') task.startedAt = Date.now()
      if (req.progress != null) task.progress = req.progress
      if (req.logTail != null) task.logTail = req.logTail
      return { accepted: true }
    }
    return await this.serial(async () => {
      const again = this.findTask(req.jobId, req.index)
      if (again == null) return { accepted: false, reason: 'unknown task' }
      const { job, task } = again
      const isCurrent = task.attemptId === req.attemptId && task.host === from && task.state === 'running'
      // A done frame from an older attempt (its host came back, or we took over
      // late) is committed if the frame is not done yet: its output is already
      // at the origin, the first complete one wins, and the newer attempt stops.
      const lateDone = !isCurrent && req.kind === 'done' && task.state !== 'done' && !isFinished(job.state)
      if (!isCurrent && !lateDone) return { accepted: false, reason: 'stale attempt' }
      if (lateDone && task.state === 'running' && task.host != null && task.host !== from) {
        void this.client.renderer(task.host, { op: 'kill', term: this.election.currentTerm(), jobId: job.id, index: task.index }).catch(() => {})
      }
      this.unsetRunning(key(task))
      task.finishedAt = Date.now()
      task.stats = req.stats ?? task.stats
      task.logTail = req.logTail ?? task.logTail
      if (req.kind === 'done') {
        Object.assign(task, { state: 'done', progress: 1, outputs: req.outputs, host: from, attemptId: req.attemptId, delivered: req.delivered !== false })
        await this.commit([], [task], true)
        await this.maybeFinish(job.id)
      } else if (req.handedBack === true) {
        // the workstation's user came back: requeue without counting it against anyone
        task.attempts = Math.max(0, task.attempts - 1)
        await this.failAttempt(job, task, from, req.error ?? 'handed back', false)
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
    if (error.startsWith(MEMORY_LIMIT_ERROR)) {
      // retried once, with twice the memory, on a host that has it free
      if (task.memory != null) {
        task.state = 'failed'
        await this.commit([job], [task], true)
        await this.finish(job, 'failed', `frame ${task.frames[0]} ran out of memory twice; last: ${error}`)
        return
      }
      task.memory = 2 * (job.spec.memory ?? task.stats?.peakRssBytes ?? 2 ** 30)
      task.errors = [...task.errors.slice(0, -1), `${host}: ${error} — retrying once with ${Math.round(task.memory / 2 ** 20)} MiB`]
      Object.assign(task, { state: 'queued', host: undefined, attemptId: undefined, progress: 0 })
      await this.commit([job], [task], true)
      return
    }
    if (blameHost && task.attempts >= job.spec.maxAttempts) {
      task.state = 'failed'
      await this.commit([job], [task], true)
      await this.finish(job, 'failed', `frame ${task.frames[0]}${task.frames.length > 1 ? `-${task.frames[task.frames.length - 1]}` : ''} failed ${task.attempts} times; last error: ${error}`)
      return
    }
    Object.assign(task, { state: 'queued', host: undefined, attemptId: undefined, progress: 0 })
    await this.commit([job], [task], true)
  }

  private async requeueHost (host: string, reason: string): Promise<void> {
    for (const [k, h] of [...this.running]) {
      if (h !== host) continue
      this.unsetRunning(k)
      const [jobId, index] = splitKey(k)
      const found = this.findTask(jobId, index)
      if (found == null || found.task.state !== 'running') continue
      found.task.finishedAt = Date.now()
      this.node.log.info(`job ${jobId}: task ${index} requeued: ${reason}`)
      await this.failAttempt(found.job, found.task, host, reason, false).catch((err: any) => { this.node.log.error(`requeue: ${err.message}`) })
    }
    this.schedulePump()
  }

  /**
   * Compare what we think runs with what hosts say they run. At takeover
   * (`adopt`): a task a host runs is adopted even if our replica missed its
   * dispatch, and a task no host runs goes back in the queue at once.
   * Periodically: a task missing at two checks in a row is requeued (two
   * checks leave time for a report in flight).
   */
  private async reconcile (adopt: boolean): Promise<void> {
    if (!this.active) return
    const hosts = this.node.table.entries().filter(e => e.advert.roles.render).map(e => e.advert.peerId)
    const lists = new Map<string, RunningTask[]>()
    await Promise.all(hosts.map(async (host) => {
      try { lists.set(host, await this.client.renderer<RunningTask[]>(host, { op: 'running' }, AbortSignal.timeout(3_000))) } catch {}
    }))
    await this.serial(async () => {
      if (!this.active) return
      const seen = new Set<string>()
      const changed: TaskRecord[] = []
      for (const [host, list] of lists) {
        for (const r of list) {
          const found = this.findTask(r.jobId, r.index)
          if (found == null || isFinished(found.job.state)) continue
          seen.add(`${key(found.task)}@${r.attemptId}`)
          const t = found.task
          if (adopt && t.state !== 'done' && (t.state !== 'running' || t.attemptId !== r.attemptId) && !this.running.has(key(t))) {
            Object.assign(t, { state: 'running', host, attemptId: r.attemptId, progress: r.progress })
            this.setRunning(key(t), host)
            changed.push(t)
            this.node.log.info(`job ${t.jobId}: adopted task ${t.index} running on ${host}`)
          }
        }
      }
      const stillMissing = new Set<string>()
      for (const [k, host] of [...this.running]) {
        const [jobId, index] = splitKey(k)
        const found = this.findTask(jobId, index)
        if (found == null || found.task.state !== 'running') { this.unsetRunning(k); continue }
        if (!lists.has(host) && this.node.table.has(host)) continue // no answer: ask again next time
        const tag = `${k}@${found.task.attemptId ?? ''}`
        if (seen.has(tag)) continue
        if (!adopt && !this.missing.has(tag)) { stillMissing.add(tag); continue }
        this.unsetRunning(k)
        this.node.log.info(`job ${jobId}: task ${index} is not running on ${host}: requeued`)
        await this.failAttempt(found.job, found.task, host, 'the host no longer runs this frame', false)
      }
      this.missing = stillMissing
      if (changed.length > 0) await this.commit([], changed, false)
    })
    this.schedulePump()
  }

  private async maybeFinish (jobId: string): Promise<void> {
    const job = this.jobs.get(jobId)
    if (job == null || isFinished(job.state)) return
    const tasks = this.tasks.get(job.id) ?? []
    if (tasks.length > 0 && tasks.every(t => t.state === 'done')) await this.finish(job, 'done')
  }

  private async finish (job: JobRecord, state: JobState, reason?: string): Promise<void> {
    job.state = state
    job.finishedAt = Date.now()
    job.reason = reason
    this.queue.remove(job.id)
    const tasks = this.tasks.get(job.id) ?? []
    const stop = tasks.filter(t => t.state === 'running')
    const changed: TaskRecord[] = []
    for (const t of tasks) {
      if (t.state === 'running' || t.state === 'queued') {
        if (state !== 'done') { t.state = 'failed'; t.errors = [...t.errors, reason ?? state].slice(-10); changed.push(t) }
        this.unsetRunning(key(t))
      }
    }
    await this.commit([job], changed, true)
    this.node.log.info(`job ${job.id} ${state}${reason != null ? `: ${reason}` : ''}`)
    for (const host of new Set(stop.map(t => t.host).filter((h): h is string => h != null))) {
      void this.client.renderer(host, { op: 'kill', term: this.election.currentTerm(), jobId: job.id }).catch(() => {})
    }
    void this.tellOrigin(job)
    if (state !== 'done') {
      for (const other of this.queue.ordered()) {
        if (other.spec.after?.includes(job.id) === true || other.spec.afterFrames === job.id) {
          await this.finish(other, 'killed', `cancelled: job ${job.id} it waits for ${state}`)
        }
      }
    }
  }

  private async tellOrigin (job: JobRecord, attempt = 0): Promise<void> {
    try {
      await this.client.origin(job.origin, { op: 'finished', jobId: job.id, state: job.state as 'done', reason: job.reason, summary: this.summary(job) })
    } catch (err: any) {
      // the origin may be switched off: keep trying while we schedule (up to an hour)
      if (attempt < 720 && this.active) setTimeout(() => { void this.tellOrigin(job, attempt + 1) }, 5_000).unref()
      else this.node.log.error(`could not tell origin ${job.origin} that job ${job.id} finished: ${err.message}`)
    }
  }

  private async control (req: ControlRequest): Promise<unknown> {
    const job = this.jobs.get(req.id)
    if (job == null) throw new ApiError(`no job ${req.id}`, 404)
    const tasks = this.tasks.get(job.id) ?? []
    if (req.action === 'priority') {
      if (req.priority == null) throw new ApiError('priority: missing', 400)
      job.priority = req.priority
      if (this.queue.has(job.id)) this.queue.reprioritize(job.id, req.priority)
      await this.commit([job], [], true)
      this.schedulePump()
      return { id: job.id, priority: job.priority }
    }
    if (req.action === 'kill') {
      if (isFinished(job.state)) return { id: job.id, state: job.state }
      await this.finish(job, 'killed', 'killed by request')
      return { id: job.id, state: job.state }
    }
    if (req.action === 'outsource') {
      if (req.site == null) throw new ApiError('site: missing', 400)
      if (isFinished(job.state)) throw new ApiError(`job ${job.id} is ${job.state}`, 409)
      if (tasks.some(t => t.state === 'running')) throw new ApiError(`job ${job.id} has frames running here; hold it and wait, or kill them first`, 409)
      job.outsourcedTo = req.site
      await this.commit([job], [], true)
      return { id: job.id, outsourcedTo: job.outsourcedTo }
    }
    if (req.action === 'localize') {
      // the remote site is gone: what it did not deliver is rendered here, or by `site` when the origin found another
      job.outsourcedTo = req.site
      const back = tasks.filter(t => t.state === 'running' || (t.state === 'failed' && !isFinished(job.state)))
      for (const t of back) Object.assign(t, { state: 'queued', host: undefined, attemptId: undefined, progress: 0 })
      await this.commit([job], back, true)
      if (job.outsourcedTo == null) this.schedulePump()
      return { id: job.id, requeued: back.length, outsourcedTo: job.outsourcedTo ?? null }
    }
    if (req.action === 'hold' || req.action === 'release') {
      job.held = req.action === 'hold'
      await this.commit([job], [], true)
      this.schedulePump()
      return { id: job.id, held: job.held }
    }
    if (req.action === 'kill-frames') {
      // stop the named running frames; they go back in the queue and run again
      if (req.frames == null) throw new ApiError('frames: missing', 400)
      const wanted = new Set(parseFrameRange(req.frames))
      const hit = tasks.filter(t => t.state === 'running' && t.frames.some(f => wanted.has(f)))
      for (const t of hit) {
        const host = t.host
        this.unsetRunning(key(t))
        if (host != null) void this.client.renderer(host, { op: 'kill', term: this.election.currentTerm(), jobId: job.id, index: t.index }).catch(() => {})
        await this.failAttempt(job, t, host ?? '?', 'killed by request', false)
      }
      this.schedulePump()
      return { id: job.id, killed: hit.reduce((n, t) => n + t.frames.length, 0) }
    }
    // retry: the named frames, or every frame that failed; a new generation wins every merge
    const wanted = req.frames != null ? new Set(parseFrameRange(req.frames)) : undefined
    const again = tasks.filter(t => t.state !== 'running' && (wanted != null ? t.frames.some(f => wanted.has(f)) : t.state === 'failed'))
    const gen = (job.gen ?? 0) + 1
    for (const t of again) {
      Object.assign(t, { state: 'queued', host: undefined, attemptId: undefined, attempts: 0, progress: 0, triedHosts: [], outputs: undefined, gen })
    }
    if (again.length > 0) {
      job.gen = gen
      if (isFinished(job.state)) {
        Object.assign(job, { state: 'queued', finishedAt: undefined, reason: undefined, excludedHosts: [], hostFailures: {} })
        this.queue.insert(job)
      }
    }
    await this.commit([job], again, true)
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
    const hosts = this.availableHosts(busy, now)
    const jobs: PlannerJob[] = this.queue.ordered().filter(job => job.held !== true && job.outsourcedTo == null && this.dependenciesDone(job)).map(job => ({
      job, queued: this.startable(job), hostsInUse: this.hostsOf(job.id)
    }))
    const plan = planDispatch(jobs, hosts, this.policy())
    if (plan.length === 0) return
    const changedJobs = new Set<JobRecord>()
    for (const { task, host } of plan) {
      const job = this.jobs.get(task.jobId)
      if (job == null) continue
      Object.assign(task, { state: 'running', host, attemptId: randomBytes(6).toString('hex'), attempts: task.attempts + 1, progress: 0, dispatchedAt: now, startedAt: undefined, finishedAt: undefined })
      this.setRunning(key(task), host)
      if (job.state === 'queued') { job.state = 'active'; job.startedAt = job.startedAt ?? now }
      changedJobs.add(job)
    }
    // dispatch state need not wait for a replica: a new scheduler adopts running frames from the hosts
    await this.commit([...changedJobs], plan.map(p => p.task), false)
    this.firstDispatchAt ??= Date.now()
    for (const { task, host } of plan) void this.dispatch(task, host)
  }

  /** Hosts that take frames now: rendering, not draining, not paused by their user or schedule. */
  private availableHosts (busy: Map<string, number>, now = Date.now()): PlannerHost[] {
    return this.node.table.entries()
      .filter(e => e.advert.roles.render && e.advert.draining !== true && e.advert.paused == null && (this.cooldown.get(e.advert.peerId) ?? 0) < now)
      .map(e => ({ id: e.advert.peerId, fingerprint: e.advert.fingerprint, free: e.advert.fingerprint.slots.total - (busy.get(e.advert.peerId) ?? 0) }))
  }

  private hostsOf (jobId: string): Set<string> {
    return new Set(this.jobHosts.get(jobId)?.keys() ?? [])
  }

  private setRunning (k: string, host: string): void {
    this.unsetRunning(k)
    this.running.set(k, host)
    const jobId = splitKey(k)[0]
    const m = this.jobHosts.get(jobId) ?? new Map<string, number>()
    m.set(host, (m.get(host) ?? 0) + 1)
    this.jobHosts.set(jobId, m)
  }

  private unsetRunning (k: string): void {
    const host = this.running.get(k)
    if (host == null) return
    this.running.delete(k)
    const jobId = splitKey(k)[0]
    const m = this.jobHosts.get(jobId)
    if (m == null) return
    const n = (m.get(host) ?? 1) - 1
    if (n <= 0) m.delete(host); else m.set(host, n)
    if (m.size === 0) this.jobHosts.delete(jobId)
  }

  /** Job-level dependencies: every job in `after` done. */
  private dependenciesDone (job: JobRecord): boolean {
    return (job.spec.after ?? []).every(d => this.jobs.get(d)?.state === 'done')
  }

  /** Queued tasks that may start: with `afterFrames`, frame N waits for frame N of the other job. */
  private startable (job: JobRecord): TaskRecord[] {
    const queued = (this.tasks.get(job.id) ?? []).filter(t => t.state === 'queued')
    if (job.spec.afterFrames == null) return queued
    const parent = this.jobs.get(job.spec.afterFrames)
    if (parent?.state === 'done') return queued
    const done = new Set<number>()
    const all = new Set<number>()
    for (const t of this.tasks.get(job.spec.afterFrames) ?? []) for (const f of t.frames) { all.add(f); if (t.state === 'done') done.add(f) }
    return queued.filter(t => t.frames.every(f => !all.has(f) || done.has(f)))
  }

  private policy (): PlanPolicy {
    const inUse = new Map<string, number>()
    const usage = new Map<string, number>()
    for (const k of this.running.keys()) {
      const job = this.jobs.get(splitKey(k)[0])
      if (job == null) continue
      for (const u of job.spec.uses ?? []) inUse.set(u, (inUse.get(u) ?? 0) + 1)
      usage.set(shareKey(job), (usage.get(shareKey(job)) ?? 0) + 1)
    }
    const weights = this.node.opts.fairShare ?? {}
    return {
      limitsFree: new Map([...this.limits.values()].map(l => [l.name, l.count - (inUse.get(l.name) ?? 0)])),
      usage,
      weight: (key) => weights[key] ?? 1,
      taskMemory: (t) => t.memory
    }
  }

  private async dispatch (task: TaskRecord, host: string): Promise<void> {
    const job = this.jobs.get(task.jobId)
    if (job == null) return
    const frames = parseFrameRange(job.spec.frames)
    const attemptId = task.attemptId
    try {
      const res = await this.client.renderer<{ accepted: boolean, reason?: string }>(host, {
        op: 'dispatch',
        term: this.election.currentTerm(),
        task: {
          jobId: job.id, index: task.index, attemptId: task.attemptId ?? '', frames: task.frames, origin: job.origin, holders: job.holders ?? [job.origin],
          renderer: job.spec.renderer.name, scene: job.scene, inputs: job.inputs, width: job.spec.width, height: job.spec.height,
          outputPattern: job.spec.outputPattern, command: job.spec.command, timeoutSec: job.spec.frameTimeoutSec != null ? Math.ceil(job.spec.frameTimeoutSec) : undefined,
          memory: task.memory ?? job.spec.memory,
          allowScripts: job.spec.allowScripts === true && host === job.origin && job.sandbox !== true, jobStart: frames[0], jobEnd: frames[frames.length - 1],
          ...(job.sandbox === true ? { sandbox: { pathMap: job.inputs.filter(i => i.original != null).map(i => ({ original: i.original as string, inside: i.path })) } } : {})
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
        this.unsetRunning(key(task))
        Object.assign(task, { state: 'queued', host: undefined, attemptId: undefined, attempts: task.attempts - 1, dispatchedAt: undefined })
        await this.commit([], [task], false)
      })
      this.schedulePump()
    }
  }

  private summary (job: JobRecord): Record<string, unknown> {
    const tasks = this.tasks.get(job.id) ?? []
    const frames = frameViews(tasks)
    const cpu = tasks.reduce((s, t) => s + (t.stats?.cpuSeconds ?? 0), 0)
    return {
      id: job.id, name: job.name, state: job.state, held: job.held === true, priority: job.priority, user: job.spec.user, group: job.spec.group,
      origin: job.origin, renderer: job.spec.renderer.name, outsourcedTo: job.outsourcedTo ?? null,
      frames: { total: frames.length, done: frames.filter(f => f.state === 'done').length, running: frames.filter(f => f.state === 'running').length, failed: frames.filter(f => f.state === 'failed').length, queued: frames.filter(f => f.state === 'queued').length },
      submittedAt: job.submittedAt, startedAt: job.startedAt, finishedAt: job.finishedAt, reason: job.reason,
      cpuSeconds: cpu, hosts: [...new Set(tasks.map(t => t.host).filter(Boolean))],
      billing: billingLines(tasks)
    }
  }

  private listJobs (): unknown[] {
    const order = new Map(this.queue.ordered().map((j, i) => [j.id, i]))
    return [...this.jobs.values()]
      .sort((a, b) => (order.get(a.id) ?? Infinity) - (order.get(b.id) ?? Infinity) || (b.finishedAt ?? 0) - (a.finishedAt ?? 0))
      .map(j => ({ ...this.summary(j), queuePosition: order.has(j.id) ? (order.get(j.id) ?? 0) + 1 : null, waiting: this.whyWaiting(j) }))
  }

  /** "Why is my job idle?": the first thing keeping a queued frame of this job from starting. */
  private whyWaiting (job: JobRecord): string | null {
    if (isFinished(job.state)) return null
    const queued = (this.tasks.get(job.id) ?? []).filter(t => t.state === 'queued')
    if (queued.length === 0) return null
    const busy = new Map<string, number>()
    for (const h of this.running.values()) busy.set(h, (busy.get(h) ?? 0) + 1)
    const everyHost = this.node.table.entries().filter(e => e.advert.roles.render).map(e => ({ id: e.advert.peerId, fingerprint: e.advert.fingerprint, free: 0, advert: e.advert }))
    const ahead = this.queue.ordered().filter(j => j.priority < job.priority && (this.tasks.get(j.id) ?? []).some(t => t.state === 'queued' || t.state === 'running'))
    const samePriority = this.queue.ordered().filter(j => j.id !== job.id && j.priority === job.priority && shareKey(j) !== shareKey(job) && this.hostsOf(j.id).size > 0)
    return waitingReason({
      job,
      dependencies: [...(job.spec.after ?? []), ...(job.spec.afterFrames != null ? [job.spec.afterFrames] : [])].map(id => ({ id, state: this.jobs.get(id)?.state ?? 'unknown', frameLevel: id === job.spec.afterFrames })),
      startable: this.startable(job).length,
      hosts: everyHost.map(h => ({ id: h.id, hostname: h.fingerprint.hostname, allowed: hostAllowed(job, h), free: h.fingerprint.slots.total - (busy.get(h.id) ?? 0), paused: h.advert.paused ?? (h.advert.draining === true ? 'draining' : undefined) })),
      limits: (job.spec.uses ?? []).map(u => { const v = this.limitsView().find(l => l.name === u); return { name: u, count: v?.count ?? 0, inUse: v?.inUse ?? 0 } }),
      hostsInUse: this.hostsOf(job.id).size,
      jobsAhead: ahead.length,
      sharingWith: [...new Set(samePriority.map(shareKey))]
    })
  }

  private async jobView (id: string): Promise<unknown> {
    const job = this.jobs.get(id)
    if (job == null) throw new ApiError(`no job ${id} at the scheduler`, 404)
    const tasks = this.tasks.get(id) ?? []
    return {
      ...this.summary(job), spec: job.spec, requirements: job.requirements, excludedHosts: job.excludedHosts, term: this.election.currentTerm(), waiting: this.whyWaiting(job),
      frames: frameViews(tasks),
      tasks: tasks.map(t => ({ index: t.index, frames: t.frames, state: t.state, host: t.host ?? null, attempts: t.attempts, progress: t.progress, errors: t.errors, logTail: t.logTail ?? [], stats: t.stats ?? null, dispatchedAt: t.dispatchedAt ?? null, startedAt: t.startedAt ?? null, finishedAt: t.finishedAt ?? null, outputs: t.outputs ?? [], delivered: t.delivered !== false }))
    }
  }
}

/** Per host: frames done, wall and CPU seconds — the billing report of a job rendered for another site. */
function billingLines (tasks: TaskRecord[]): Array<{ host: string, frames: number, wallSeconds: number, cpuSeconds: number }> {
  const by = new Map<string, { host: string, frames: number, wallSeconds: number, cpuSeconds: number }>()
  for (const t of tasks) {
    if (t.state !== 'done' || t.host == null) continue
    const b = by.get(t.host) ?? { host: t.host, frames: 0, wallSeconds: 0, cpuSeconds: 0 }
    b.frames += t.frames.length
    b.wallSeconds += t.stats?.wallSeconds ?? 0
    b.cpuSeconds += t.stats?.cpuSeconds ?? 0
    by.set(t.host, b)
  }
  return [...by.values()]
}

const key = (t: TaskRecord): string => `${t.jobId}#${t.index}`
function splitKey (k: string): [string, number] {
  const i = k.lastIndexOf('#')
  return [k.slice(0, i), Number(k.slice(i + 1))]
}
