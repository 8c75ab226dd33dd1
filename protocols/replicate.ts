import type { Connection, Stream } from '@libp2p/interface'
import { arr, bool, int, num, obj, oneOf, optStr, str } from './schema.js'
import type { MessageLimits } from './json-messages.js'
import { callRpc, serveRpc } from './rpc.js'
import { parseInput } from './scheduler-rpc.js'
import { validateJobSpec } from '../node/jobs/job-spec.js'
import { validateRequirement } from '../node/jobs/requirements.js'
import type { InputFile, JobRecord, SiteLimit, TaskRecord, Version } from '../node/jobs/job-model.js'

/**
 * /farmesh/replicate/1.0.0 — job state between nodes of a site.
 *
 * - `put`: the scheduler's writes, stamped with its term; a replica refuses a
 *   put from a term older than the newest it has seen (fencing).
 * - `sync`: anti-entropy after a partition or a new scheduler: a node's whole
 *   view of unfinished jobs, merged record by record (replica-merge.ts).
 * - `hold`: keep a copy of a job's inputs (fetched from its origin), so the
 *   job still renders when the origin is switched off.
 */
export const REPLICATE_PROTOCOL = '/farmesh/replicate/1.0.0'
export const REPLICATE_LIMITS: MessageLimits = { maxBytes: 32 * 1024 * 1024, timeoutMs: 30_000 }

export type ReplicateRequest =
  | { op: 'put', term: number, jobs: JobRecord[], tasks: TaskRecord[], limits?: SiteLimit[] }
  | { op: 'sync', term: number, jobs: JobRecord[], tasks: TaskRecord[], limits?: SiteLimit[] }
  | { op: 'hold', origin: string, jobId: string, inputs: InputFile[] }

const JOB_STATES = ['queued', 'active', 'done', 'failed', 'killed'] as const
const TASK_STATES = ['queued', 'running', 'done', 'failed'] as const

function version (v: unknown, f: string): Version | undefined {
  if (v === undefined) return undefined
  const o = obj(v, f)
  return { term: int(o.term, `${f}.term`), n: int(o.n, `${f}.n`) }
}

const optInt = (v: unknown, f: string): number | undefined => v === undefined || v === null ? undefined : int(v, f)
const strs = (v: unknown, f: string, max = 10_000): string[] => arr(v, f, max, (x, g) => str(x, g, 4096))

export function parseJobRecord (v: unknown, f = 'job'): JobRecord {
  const o = obj(v, f)
  const failures = obj(o.hostFailures, `${f}.hostFailures`)
  return {
    id: str(o.id, `${f}.id`, 64),
    seq: int(o.seq, `${f}.seq`),
    name: str(o.name, `${f}.name`, 256),
    spec: validateJobSpec(o.spec),
    requirements: arr(o.requirements, `${f}.requirements`, 200, (x) => validateRequirement(x)),
    inputs: arr(o.inputs, `${f}.inputs`, 100_000, parseInput),
    scene: str(o.scene, `${f}.scene`, 4096),
    origin: str(o.origin, `${f}.origin`, 128),
    state: oneOf(o.state, `${f}.state`, JOB_STATES),
    priority: int(o.priority, `${f}.priority`, 0, 1000),
    submittedAt: int(o.submittedAt, `${f}.submittedAt`),
    startedAt: optInt(o.startedAt, `${f}.startedAt`),
    finishedAt: optInt(o.finishedAt, `${f}.finishedAt`),
    reason: optStr(o.reason, `${f}.reason`, 8192),
    hostFailures: Object.fromEntries(Object.entries(failures).slice(0, 10_000).map(([k, x]) => [str(k, `${f}.hostFailures key`, 128), int(x, `${f}.hostFailures.${k}`)])),
    excludedHosts: strs(o.excludedHosts, `${f}.excludedHosts`),
    frameCount: int(o.frameCount, `${f}.frameCount`),
    taskCount: int(o.taskCount, `${f}.taskCount`),
    holders: o.holders === undefined ? undefined : strs(o.holders, `${f}.holders`, 64),
    held: o.held === undefined ? undefined : bool(o.held, `${f}.held`),
    outsourcedTo: optStr(o.outsourcedTo, `${f}.outsourcedTo`, 128),
    sandbox: o.sandbox === undefined ? undefined : bool(o.sandbox, `${f}.sandbox`),
    gen: optInt(o.gen, `${f}.gen`),
    ver: version(o.ver, `${f}.ver`)
  }
}

export function parseTaskRecord (v: unknown, f = 'task'): TaskRecord {
  const o = obj(v, f)
  const s = o.stats === undefined || o.stats === null ? undefined : obj(o.stats, `${f}.stats`)
  return {
    jobId: str(o.jobId, `${f}.jobId`, 64),
    index: int(o.index, `${f}.index`),
    frames: arr(o.frames, `${f}.frames`, 100_000, (x, g) => int(x, g)),
    state: oneOf(o.state, `${f}.state`, TASK_STATES),
    host: optStr(o.host, `${f}.host`, 128),
    attemptId: optStr(o.attemptId, `${f}.attemptId`, 64),
    attempts: int(o.attempts, `${f}.attempts`),
    triedHosts: strs(o.triedHosts, `${f}.triedHosts`, 1000),
    progress: num(o.progress, `${f}.progress`, 0, 1),
    dispatchedAt: optInt(o.dispatchedAt, `${f}.dispatchedAt`),
    startedAt: optInt(o.startedAt, `${f}.startedAt`),
    finishedAt: optInt(o.finishedAt, `${f}.finishedAt`),
    errors: strs(o.errors, `${f}.errors`, 100),
    logTail: o.logTail === undefined ? undefined : strs(o.logTail, `${f}.logTail`, 500),
    stats: s == null
      ? undefined
      : {
          exitCode: s.exitCode === null ? null : int(s.exitCode, `${f}.stats.exitCode`, -1000, 1000),
          cpuSeconds: num(s.cpuSeconds, `${f}.stats.cpuSeconds`, 0),
          peakRssBytes: num(s.peakRssBytes, `${f}.stats.peakRssBytes`, 0),
          ioReadBytes: num(s.ioReadBytes, `${f}.stats.ioReadBytes`, 0),
          ioWriteBytes: num(s.ioWriteBytes, `${f}.stats.ioWriteBytes`, 0),
          wallSeconds: num(s.wallSeconds, `${f}.stats.wallSeconds`, 0)
        },
    outputs: o.outputs === undefined ? undefined : strs(o.outputs, `${f}.outputs`),
    delivered: o.delivered === undefined ? undefined : bool(o.delivered, `${f}.delivered`),
    memory: optInt(o.memory, `${f}.memory`),
    gen: optInt(o.gen, `${f}.gen`),
    ver: version(o.ver, `${f}.ver`)
  }
}

export function parseReplicateRequest (v: unknown): ReplicateRequest {
  const o = obj(v, 'request')
  const op = oneOf(o.op, 'op', ['put', 'sync', 'hold'] as const)
  if (op === 'hold') return { op, origin: str(o.origin, 'origin', 128), jobId: str(o.jobId, 'jobId', 64), inputs: arr(o.inputs, 'inputs', 100_000, parseInput) }
  return {
    op,
    term: int(o.term, 'term'),
    jobs: arr(o.jobs, 'jobs', 10_000, (x, f) => parseJobRecord(x, f)),
    tasks: arr(o.tasks, 'tasks', 1_000_000, (x, f) => parseTaskRecord(x, f)),
    limits: o.limits === undefined ? undefined : arr(o.limits, 'limits', 1000, (x, f) => { const l = obj(x, f); return { name: str(l.name, `${f}.name`, 64), count: int(l.count, `${f}.count`, 0, 1_000_000), ver: version(l.ver, `${f}.ver`) } })
  }
}

export async function callReplica<T> (connection: Connection, req: ReplicateRequest, signal?: AbortSignal): Promise<T> {
  return await callRpc<T>(connection, REPLICATE_PROTOCOL, req, REPLICATE_LIMITS, signal)
}

export async function serveReplica (stream: Stream, answer: (req: ReplicateRequest) => Promise<unknown>): Promise<void> {
  await serveRpc(stream, parseReplicateRequest, answer, REPLICATE_LIMITS)
}
