import type { FarmNode } from '../farm-node.js'
import type { SiteClient } from '../site-client.js'
import type { JobStore } from '../../storage/job-store.js'
import type { BlobStore } from '../../storage/blob-store.js'
import type { Election } from './election.js'
import { REPLICATE_PROTOCOL, callReplica, serveReplica, type ReplicateRequest } from '../../protocols/replicate.js'
import { fetchBlob } from '../../protocols/blob.js'
import { isFinished, type InputFile, type JobRecord, type SiteLimit, type TaskRecord } from '../jobs/job-model.js'
import { compareVersion, jobWins, taskWins } from './replica-merge.js'

/**
 * Keeps every node's copy of the site's job state: the scheduler's writes
 * go to every member (`put`), and a write that must be durable waits for at
 * least one other host to have stored it. When the scheduler changes or a
 * member (re)joins, nodes exchange their unfinished jobs (`sync`) and merge
 * them, so a new scheduler, or the winner after a partition heals, holds
 * everything either side knew. Also keeps copies of job inputs (`hold`).
 */
export class ReplicationError extends Error {
  constructor (message: string) { super(message); this.name = 'ReplicationError' }
}

export class StaleTermError extends Error {
  constructor (message: string) { super(message); this.name = 'StaleTermError' }
}

const ACK_TIMEOUT_MS = 5_000

export type MergeListener = (jobs: JobRecord[], tasks: TaskRecord[], limits: SiteLimit[]) => void

export class Replicator {
  private onMerge?: MergeListener

  constructor (private readonly node: FarmNode, private readonly store: JobStore, private readonly blobs: BlobStore, private readonly client: SiteClient, private readonly election: Election) {}

  async start (): Promise<void> {
    await this.node.membership.handle(REPLICATE_PROTOCOL, async (stream) => {
      await serveReplica(stream, async (req) => await this.answer(req))
    })
    // a new scheduler learns what every node knows; a (re)joining node learns what the scheduler knows
    this.election.on('change', (leader) => {
      if (leader != null && leader !== this.node.peerId) void this.syncTo(leader)
    })
    this.node.membership.on('join', (peer) => {
      if (this.election.isLeader()) setTimeout(() => { void this.syncTo(peer) }, 500).unref()
    })
  }

  /** The active scheduler wants merged records applied to its memory too. */
  setMergeListener (fn: MergeListener | undefined): void { this.onMerge = fn }

  private members (): string[] {
    return this.node.membership.list().filter(p => p !== this.node.peerId)
  }

  /**
   * Send the scheduler's writes to every member. With `durable`, resolve only
   * once one other host stored them (when the site has another host).
   */
  async put (jobs: JobRecord[], tasks: TaskRecord[], durable: boolean, limits?: SiteLimit[]): Promise<void> {
    this.node.events.records(jobs, tasks)
    const members = this.members()
    if (members.length === 0) return
    const req: ReplicateRequest = { op: 'put', term: this.election.currentTerm(), jobs, tasks, limits }
    const sends = members.map(async (peer) => {
      const conn = await this.client.connection(peer)
      return await callReplica(conn, req, AbortSignal.timeout(ACK_TIMEOUT_MS))
    })
    if (!durable) { sends.forEach(p => { p.catch(() => {}) }); return }
    try {
      await Promise.any(sends)
    } catch (err: any) {
      const reasons = (err.errors ?? []).map((e: Error) => e.message).join('; ')
      throw new ReplicationError(`could not store the change on a second host: ${reasons}`)
    }
  }

  /** Our unfinished jobs, job by job, to one peer. */
  async syncTo (peer: string): Promise<void> {
    try {
      const conn = await this.client.connection(peer)
      const limits = await this.store.allLimits()
      if (limits.length > 0) await callReplica(conn, { op: 'sync', term: this.election.currentTerm(), jobs: [], tasks: [], limits }, AbortSignal.timeout(30_000))
      for (const job of await this.store.allJobs()) {
        if (isFinished(job.state) && (job.finishedAt ?? 0) < Date.now() - 3_600_000) continue
        const tasks = await this.store.tasksOf(job.id)
        await callReplica(conn, { op: 'sync', term: this.election.currentTerm(), jobs: [job], tasks }, AbortSignal.timeout(30_000))
      }
    } catch (err: any) {
      this.node.log.debug(`sync to ${peer} failed: ${err.message}`)
    }
  }

  private async answer (req: ReplicateRequest): Promise<unknown> {
    if (req.op === 'hold') return await this.hold(req.origin, req.inputs)
    if (req.op === 'put') {
      if (!this.election.accepts(req.term)) throw new StaleTermError(`term ${req.term} is older than ${this.election.currentTerm()}: refused`)
      this.election.observe(req.term)
    }
    return await this.merge(req.jobs, req.tasks, req.limits ?? [])
  }

  /** Store whichever records are newer than ours; tell the active scheduler. */
  async merge (jobs: JobRecord[], tasks: TaskRecord[], limits: SiteLimit[] = []): Promise<{ jobs: number, tasks: number }> {
    const newJobs: JobRecord[] = []
    const newTasks: TaskRecord[] = []
    const newLimits: SiteLimit[] = []
    for (const l of limits) {
      if (compareVersion(l.ver, (await this.store.getLimit(l.name))?.ver) > 0) { await this.store.putLimit(l); newLimits.push(l) }
    }
    for (const j of jobs) if (jobWins(await this.store.getJob(j.id), j)) newJobs.push(j)
    for (const t of tasks) if (taskWins(await this.store.getTask(t.jobId, t.index), t)) newTasks.push(t)
    if (newJobs.length + newTasks.length + newLimits.length > 0) {
      // a task can arrive before its job (separate puts): store both together when we can
      await this.store.putTasks(newTasks)
      for (const j of newJobs) await this.store.putJob(j)
      this.onMerge?.(newJobs, newTasks, newLimits)
      this.node.events.records(newJobs, newTasks)
    }
    return { jobs: newJobs.length, tasks: newTasks.length }
  }

  /** Keep a copy of a job's inputs, fetched from its origin and verified. */
  private async hold (origin: string, inputs: InputFile[]): Promise<{ held: number }> {
    const conn = await this.client.connection(origin)
    for (const input of inputs) await fetchBlob(conn, input.hash, this.blobs, { signal: AbortSignal.timeout(25_000) })
    return { held: inputs.length }
  }

  /** Ask `peer` to hold `inputs` of a job that originates here. */
  async requestHold (peer: string, jobId: string, inputs: InputFile[]): Promise<void> {
    const conn = await this.client.connection(peer)
    await callReplica(conn, { op: 'hold', origin: this.node.peerId, jobId, inputs })
  }
}
