import type { JobSpec } from './job-spec.js'
import type { Requirement } from './requirements.js'

/**
 * The job as the farm keeps it once submitted. The scheduler owns job and
 * task state; the origin (the node it was submitted on) owns the inputs and
 * the outputs. Everything here is plain JSON: it is stored in level and sent
 * between nodes.
 */
export type JobState = 'queued' | 'active' | 'done' | 'failed' | 'killed'
export type TaskState = 'queued' | 'running' | 'done' | 'failed'

/** Which scheduler wrote a record, and when: replicas and merges keep the newer. */
export interface Version { term: number, n: number }

/** A site-wide limit, e.g. a renderer's floating licenses: at most `count` frames hold one at once. */
export interface SiteLimit { name: string, count: number, ver?: Version }

export interface InputFile {
  /** posix path relative to the job's input directory */
  path: string
  hash: string
  size: number
  /** the absolute path it had on the submitting host (path mapping, later) */
  original?: string
}

export interface JobRecord {
  id: string
  /** submission order at the scheduler: FIFO within a priority */
  seq: number
  name: string
  spec: JobSpec
  requirements: Requirement[]
  inputs: InputFile[]
  /** the scene, relative to the input directory */
  scene: string
  origin: string
  state: JobState
  priority: number
  submittedAt: number
  startedAt?: number
  finishedAt?: number
  reason?: string
  /** failures per host; a host that fails twice is excluded from the job */
  hostFailures: Record<string, number>
  excludedHosts: string[]
  frameCount: number
  taskCount: number
  /** nodes holding every input: the origin and at least one replica */
  holders?: string[]
  /** held jobs stay queued: none of their frames is dispatched until released */
  held?: boolean
  /** rendered by this federated site (its id), not by our hosts */
  outsourcedTo?: string
  /** a job taken in from another site: its frames run only in the sandbox */
  sandbox?: boolean
  /** retry generation: a retry is newer than anything before it */
  gen?: number
  ver?: Version
}

export interface TaskStats {
  exitCode: number | null
  cpuSeconds: number
  peakRssBytes: number
  ioReadBytes: number
  ioWriteBytes: number
  wallSeconds: number
}

export interface TaskRecord {
  jobId: string
  index: number
  frames: number[]
  state: TaskState
  host?: string
  /** identifies one dispatch of the task; reports of older attempts are ignored */
  attemptId?: string
  attempts: number
  triedHosts: string[]
  progress: number
  dispatchedAt?: number
  startedAt?: number
  finishedAt?: number
  errors: string[]
  logTail?: string[]
  stats?: TaskStats
  /** output file names stored at the origin */
  outputs?: string[]
  /** false while the origin was unreachable: the host keeps the output and delivers it later */
  delivered?: boolean
  /** memory limit raised after the frame ran out of memory (bytes); it is retried once with it */
  memory?: number
  gen?: number
  ver?: Version
}

/** What `farmesh job ID --json` shows of each frame. */
export interface FrameView {
  frame: number
  state: TaskState
  host: string | null
  attempts: number
  progress: number
  error?: string
}

export function frameViews (tasks: TaskRecord[]): FrameView[] {
  const out: FrameView[] = []
  for (const t of tasks) {
    for (const frame of t.frames) {
      out.push({ frame, state: t.state, host: t.host ?? null, attempts: t.attempts, progress: t.state === 'done' ? 1 : t.progress, ...(t.errors.length > 0 ? { error: t.errors[t.errors.length - 1] } : {}) })
    }
  }
  return out.sort((a, b) => a.frame - b.frame)
}

export function newJobId (): string {
  const rand = Math.floor(Math.random() * 36 ** 4).toString(36).padStart(4, '0')
  return `j${Date.now().toString(36)}${rand}`
}

export function isFinished (state: JobState): boolean {
  return state === 'done' || state === 'failed' || state === 'killed'
}
