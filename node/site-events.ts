import { EventEmitter } from 'node:events'
import type { JobRecord, TaskRecord } from './jobs/job-model.js'

/**
 * Changes this node learns of, for live views (the dashboard's event
 * stream): the resource table, and job and frame states as the scheduler
 * writes them or as they arrive by replication — so every node, not only the
 * scheduler, can push live updates to its pages.
 */
/** log lines per frame in a tasks event (the job view has the whole tail) */
const LOG_LINES = 10

export type SiteEvent =
  | { type: 'hosts' }
  | { type: 'job', job: { id: string, name: string, state: string, priority: number, held: boolean } }
  | { type: 'tasks', jobId: string, tasks: Array<{ index: number, frames: number[], state: string, host: string | null, attempts: number, progress: number, logTail: string[] }> }

export class SiteEvents extends EventEmitter<{ event: [SiteEvent] }> {
  constructor () {
    super()
    this.setMaxListeners(1000)
  }

  hosts (): void { this.emit('event', { type: 'hosts' }) }

  records (jobs: JobRecord[], tasks: TaskRecord[]): void {
    for (const j of jobs) this.emit('event', { type: 'job', job: { id: j.id, name: j.name, state: j.state, priority: j.priority, held: j.held === true } })
    const byJob = new Map<string, TaskRecord[]>()
    for (const t of tasks) byJob.set(t.jobId, [...(byJob.get(t.jobId) ?? []), t])
    for (const [jobId, list] of byJob) {
      this.emit('event', { type: 'tasks', jobId, tasks: list.map(t => ({ index: t.index, frames: t.frames, state: t.state, host: t.host ?? null, attempts: t.attempts, progress: t.progress, logTail: (t.logTail ?? []).slice(-LOG_LINES) })) })
    }
  }
}
