import type { Connection, Stream } from '@libp2p/interface'
import { arr, int, num, obj, oneOf, str, optStr } from './schema.js'
import type { MessageLimits } from './json-messages.js'
import { callRpc, serveRpc } from './rpc.js'
import { validateJobSpec, type JobSpec } from '../node/jobs/job-spec.js'
import type { InputFile, TaskStats } from '../node/jobs/job-model.js'
import { ProtocolError } from '../node/errors.js'

/**
 * /farmesh/scheduler/1.0.0 — everything sent to the site's scheduler:
 * submissions from origins, task reports from renderers, and queries and
 * control from any node's API. One request, one reply per stream.
 */
export const SCHEDULER_PROTOCOL = '/farmesh/scheduler/1.0.0'
export const SCHEDULER_LIMITS: MessageLimits = { maxBytes: 16 * 1024 * 1024, timeoutMs: 15_000 }
const MAX_INPUTS = 100_000

export interface SubmitRequest { op: 'submit', id: string, spec: JobSpec, inputs: InputFile[], scene: string, holders?: string[], outsourceTo?: string, sandbox?: boolean }
export interface ReportRequest {
  op: 'report'
  jobId: string
  index: number
  attemptId: string
  kind: 'started' | 'progress' | 'done' | 'failed'
  progress?: number
  error?: string
  logTail?: string[]
  stats?: TaskStats
  outputs?: string[]
  /** false when the origin was unreachable and the host keeps the outputs to deliver later */
  delivered?: boolean
  /** the host's user took it back (NIMBY): not the frame's fault, nor the host's */
  handedBack?: boolean
}
export interface QueryRequest { op: 'jobs' }
export interface JobQuery { op: 'job', id: string }
export const CONTROL_ACTIONS = ['kill', 'retry', 'priority', 'kill-frames', 'hold', 'release', 'outsource', 'localize'] as const
export interface ControlRequest { op: 'control', id: string, action: typeof CONTROL_ACTIONS[number], frames?: string, priority?: number, site?: string }
/** From a job's origin: states of its frames at the site it was outsourced to. */
export interface RemoteFramesRequest { op: 'remote-frames', id: string, frames: Array<{ frame: number, state: 'queued' | 'running' | 'done' | 'failed', host: string | null, attempts: number, progress: number, logTail?: string[] }> }
export interface LimitsRequest { op: 'limits', set?: { name: string, count: number } }
export type SchedulerRequest = SubmitRequest | ReportRequest | QueryRequest | JobQuery | ControlRequest | LimitsRequest | RemoteFramesRequest

const jobId = (v: unknown, f: string): string => {
  const s = str(v, f, 64)
  if (!/^[a-z0-9-]{4,64}$/.test(s)) throw new ProtocolError(`${f}: malformed job id`)
  return s
}

export function parseInput (v: unknown, f: string): InputFile {
  const o = obj(v, f)
  const path = str(o.path, `${f}.path`, 4096)
  if (path.startsWith('/') || path.split('/').some(p => p === '..' || p === '' || p === '.')) throw new ProtocolError(`${f}.path: must be a relative path without . or .. parts`)
  const hash = str(o.hash, `${f}.hash`, 64)
  if (!/^[0-9a-f]{64}$/.test(hash)) throw new ProtocolError(`${f}.hash: expected 64 hex characters`)
  return { path, hash, size: int(o.size, `${f}.size`), ...(o.original != null ? { original: str(o.original, `${f}.original`, 4096) } : {}) }
}

function parseStats (v: unknown): TaskStats {
  const o = obj(v, 'stats')
  return {
    exitCode: o.exitCode === null ? null : int(o.exitCode, 'stats.exitCode', -1000, 1000),
    cpuSeconds: num(o.cpuSeconds, 'stats.cpuSeconds', 0),
    peakRssBytes: num(o.peakRssBytes, 'stats.peakRssBytes', 0),
    ioReadBytes: num(o.ioReadBytes, 'stats.ioReadBytes', 0),
    ioWriteBytes: num(o.ioWriteBytes, 'stats.ioWriteBytes', 0),
    wallSeconds: num(o.wallSeconds, 'stats.wallSeconds', 0)
  }
}

export function parseSchedulerRequest (v: unknown): SchedulerRequest {
  const o = obj(v, 'request')
  const op = oneOf(o.op, 'op', ['submit', 'report', 'jobs', 'job', 'control', 'limits', 'remote-frames'] as const)
  switch (op) {
    case 'submit':
      return { op, id: jobId(o.id, 'id'), spec: validateJobSpec(o.spec), inputs: arr(o.inputs, 'inputs', MAX_INPUTS, parseInput), scene: str(o.scene, 'scene', 4096), holders: o.holders === undefined ? undefined : arr(o.holders, 'holders', 64, (x, f) => str(x, f, 128)), outsourceTo: optStr(o.outsourceTo, 'outsourceTo', 128), sandbox: o.sandbox === true ? true : undefined }
    case 'remote-frames':
      return {
        op,
        id: jobId(o.id, 'id'),
        frames: arr(o.frames, 'frames', 1_000_000, (x, f) => {
          const u = obj(x, f)
          return {
            frame: int(u.frame, `${f}.frame`), state: oneOf(u.state, `${f}.state`, ['queued', 'running', 'done', 'failed'] as const), host: optStr(u.host, `${f}.host`, 128) ?? null, attempts: int(u.attempts, `${f}.attempts`), progress: num(u.progress, `${f}.progress`, 0, 1),
            ...(u.logTail === undefined ? {} : { logTail: arr(u.logTail, `${f}.logTail`, 20, (x, g) => str(x, g, 1000)) })
          }
        })
      }
    case 'report':
      return {
        op,
        jobId: jobId(o.jobId, 'jobId'),
        index: int(o.index, 'index'),
        attemptId: str(o.attemptId, 'attemptId', 64),
        kind: oneOf(o.kind, 'kind', ['started', 'progress', 'done', 'failed'] as const),
        progress: o.progress === undefined ? undefined : num(o.progress, 'progress', 0, 1),
        error: optStr(o.error, 'error', 4096),
        logTail: o.logTail === undefined ? undefined : arr(o.logTail, 'logTail', 200, (x, f) => str(x, f, 4096)),
        stats: o.stats === undefined ? undefined : parseStats(o.stats),
        outputs: o.outputs === undefined ? undefined : arr(o.outputs, 'outputs', 10_000, (x, f) => str(x, f, 256)),
        delivered: o.delivered === undefined ? undefined : o.delivered === true,
        handedBack: o.handedBack === true ? true : undefined
      }
    case 'jobs':
      return { op }
    case 'limits': {
      if (o.set === undefined) return { op }
      const s = obj(o.set, 'set')
      const name = str(s.name, 'set.name', 64)
      if (!/^[A-Za-z0-9._-]{1,64}$/.test(name)) throw new ProtocolError('name: 1-64 letters, digits, \'.\', \'_\' or \'-\'')
      if (typeof s.count !== 'number' || !Number.isInteger(s.count) || s.count < 0 || s.count > 1_000_000) throw new ProtocolError(`count: expected a whole number from 0 to 1000000, got ${JSON.stringify(s.count)}`)
      return { op, set: { name, count: s.count } }
    }
    case 'job':
      return { op, id: jobId(o.id, 'id') }
    case 'control':
      return {
        op,
        id: jobId(o.id, 'id'),
        action: oneOf(o.action, 'action', CONTROL_ACTIONS),
        frames: optStr(o.frames, 'frames', 4096),
        priority: o.priority === undefined ? undefined : int(o.priority, 'priority', 0, 1000),
        site: optStr(o.site, 'site', 128)
      }
  }
}

/** Ask the scheduler; a refusal comes back as a RemoteError with the scheduler's reason. */
export async function callScheduler<T> (connection: Connection, req: SchedulerRequest, signal?: AbortSignal): Promise<T> {
  return await callRpc<T>(connection, SCHEDULER_PROTOCOL, req, SCHEDULER_LIMITS, signal)
}

export async function serveScheduler (stream: Stream, answer: (req: SchedulerRequest) => Promise<unknown>): Promise<void> {
  await serveRpc(stream, parseSchedulerRequest, answer, SCHEDULER_LIMITS)
}
