import { Level } from 'level'
import type { InputFile, JobRecord, SiteLimit, TaskRecord } from '../node/jobs/job-model.js'
import type { JobSpec } from '../node/jobs/job-spec.js'

/**
 * Everything a node keeps about jobs, in one level database in its data
 * directory. Writes are awaited before anything is acknowledged, so a crash
 * loses nothing that was confirmed.
 *
 * - `sched-jobs`, `sched-tasks`: the scheduler's queue and task states
 * - `origin-jobs`: jobs submitted on this node, and which outputs arrived
 */
export interface OriginJob {
  id: string
  name: string
  submittedAt: number
  outputs: Record<string, { frame: number, size: number, hash: string, host: string, storedAt: number }>
  finished?: { state: string, at: number, reason?: string }
  notify: string[]
  summary?: unknown
  /** what was submitted, kept to outsource the job later */
  spec?: JobSpec
  scene?: string
  inputs?: InputFile[]
  /** sent to a federated site: how, so a push resumes with the same bundle */
  outsourced?: {
    siteId: string, nonce: string, params: string, createdAt: number,
    /** input hashes the remote already held when the bundle was made (not sent); part of what makes the bundle reproducible */
    held?: string[]
    /** the remote site's node that holds the bundle (and so the resume point and the job) */
    remotePeer?: string
    /** only these frames were sent (a job taken back from a vanished site and offered to another) */
    frames?: string
    sentFiles: number
    /** bytes put on the wire, every attempt counted */
    bytesSent: number
    /** the bundle's size, and how long from the first byte packed to the remote's answer */
    bundleBytes?: number, pushMs?: number
    remoteJobId?: string
  }
  /** the remote site's billing report */
  billing?: unknown
  /** taken in from another site: whose job it is */
  remote?: { site: string, jobId: string, peer: string, bytesReceived: number }
}

const taskKey = (jobId: string, index: number): string => `${jobId}:${String(index).padStart(8, '0')}`

export class JobStore {
  private readonly db: Level<string, any>
  private readonly jobs
  private readonly tasks
  private readonly origin
  private readonly meta
  private readonly limits

  constructor (path: string) {
    this.db = new Level<string, any>(path, { valueEncoding: 'json' })
    this.jobs = this.db.sublevel<string, JobRecord>('sched-jobs', { valueEncoding: 'json' })
    this.tasks = this.db.sublevel<string, TaskRecord>('sched-tasks', { valueEncoding: 'json' })
    this.origin = this.db.sublevel<string, OriginJob>('origin-jobs', { valueEncoding: 'json' })
    this.meta = this.db.sublevel<string, number>('meta', { valueEncoding: 'json' })
    this.limits = this.db.sublevel<string, SiteLimit>('limits', { valueEncoding: 'json' })
  }

  async open (): Promise<void> { await this.db.open() }
  async close (): Promise<void> { await this.db.close() }

  async nextSeq (): Promise<number> {
    const seq = ((await this.meta.get('seq')) ?? 0) + 1
    await this.meta.put('seq', seq)
    return seq
  }

  /** A new job and all its tasks, atomically. */
  async createJob (job: JobRecord, tasks: TaskRecord[]): Promise<void> {
    await this.db.batch([
      { type: 'put', sublevel: this.jobs, key: job.id, value: job },
      ...tasks.map(t => ({ type: 'put' as const, sublevel: this.tasks, key: taskKey(t.jobId, t.index), value: t }))
    ])
  }

  async putJob (job: JobRecord): Promise<void> { await this.jobs.put(job.id, job) }

  async putTasks (tasks: TaskRecord[], job?: JobRecord): Promise<void> {
    await this.db.batch([
      ...(job != null ? [{ type: 'put' as const, sublevel: this.jobs, key: job.id, value: job }] : []),
      ...tasks.map(t => ({ type: 'put' as const, sublevel: this.tasks, key: taskKey(t.jobId, t.index), value: t }))
    ])
  }

  async allJobs (): Promise<JobRecord[]> { return await this.jobs.values().all() }
  async getJob (id: string): Promise<JobRecord | undefined> { return await this.jobs.get(id) }
  async getTask (jobId: string, index: number): Promise<TaskRecord | undefined> { return await this.tasks.get(taskKey(jobId, index)) }

  async allLimits (): Promise<SiteLimit[]> { return await this.limits.values().all() }
  async getLimit (name: string): Promise<SiteLimit | undefined> { return await this.limits.get(name) }
  async putLimit (limit: SiteLimit): Promise<void> { await this.limits.put(limit.name, limit) }

  async getMeta (key: string): Promise<number | undefined> { return await this.meta.get(key) }
  async putMeta (key: string, value: number): Promise<void> { await this.meta.put(key, value) }

  async tasksOf (jobId: string): Promise<TaskRecord[]> {
    return await this.tasks.values({ gte: `${jobId}:`, lt: `${jobId};` }).all()
  }

  async putOrigin (job: OriginJob): Promise<void> { await this.origin.put(job.id, job) }
  async getOrigin (id: string): Promise<OriginJob | undefined> { return await this.origin.get(id) }
  async allOrigin (): Promise<OriginJob[]> { return await this.origin.values().all() }
  async deleteOrigin (id: string): Promise<void> { await this.origin.del(id) }
}
