import type { Connection, Stream } from '@libp2p/interface'
import { arr, bool, int, obj, oneOf, str } from './schema.js'
import type { MessageLimits } from './json-messages.js'
import { callRpc, serveRpc } from './rpc.js'
import { parseInput } from './scheduler-rpc.js'
import type { InputFile } from '../node/jobs/job-model.js'
import { isRendererName, type RendererName } from '../node/jobs/requirements.js'
import { ProtocolError } from '../node/errors.js'

/**
 * /farmesh/render/1.0.0 — the scheduler pushes a task into a free slot of a
 * renderer (dispatch by push: no polling), or stops tasks (kill). Every
 * message carries the scheduler's term so a deposed scheduler can be fenced.
 */
export const RENDER_PROTOCOL = '/farmesh/render/1.0.0'
export const RENDER_LIMITS: MessageLimits = { maxBytes: 16 * 1024 * 1024, timeoutMs: 10_000 }

export interface DispatchTask {
  jobId: string
  index: number
  attemptId: string
  frames: number[]
  origin: string
  /** nodes holding the inputs: the origin first, then replicas */
  holders: string[]
  renderer: RendererName
  scene: string
  inputs: InputFile[]
  width?: number
  height?: number
  outputPattern: string
  command?: string[]
  timeoutSec?: number
  /** stop the frame when it uses more memory than this (bytes) */
  memory?: number
  /** a job from another site: run every frame in the sandbox; absolute paths it names map to its inputs */
  sandbox?: { pathMap: Array<{ original: string, inside: string }> }
  allowScripts: boolean
  /** first and last frame of the whole job: POV-Ray's animation clock spans them */
  jobStart: number
  jobEnd: number
}

export const HOST_ACTIONS = ['drain', 'undrain', 'stop', 'nimby-on', 'nimby-off'] as const
export type HostAction = typeof HOST_ACTIONS[number]

export type RenderRequest =
  | { op: 'dispatch', term: number, task: DispatchTask }
  | { op: 'kill', term: number, jobId: string, index?: number }
  | { op: 'running' }
  | { op: 'host', action: HostAction }

export interface RunningTask { jobId: string, index: number, attemptId: string, progress: number }

function parseTask (v: unknown): DispatchTask {
  const o = obj(v, 'task')
  const renderer = str(o.renderer, 'task.renderer', 32)
  if (!isRendererName(renderer)) throw new ProtocolError('task.renderer: unknown renderer')
  const pattern = str(o.outputPattern, 'task.outputPattern', 200)
  if (!/^[A-Za-z0-9._#-]+$/.test(pattern)) throw new ProtocolError('task.outputPattern: must be a plain file name')
  return {
    jobId: str(o.jobId, 'task.jobId', 64),
    index: int(o.index, 'task.index'),
    attemptId: str(o.attemptId, 'task.attemptId', 64),
    frames: arr(o.frames, 'task.frames', 100_000, (x, f) => int(x, f)),
    origin: str(o.origin, 'task.origin', 128),
    holders: arr(o.holders, 'task.holders', 64, (x, f) => str(x, f, 128)),
    renderer,
    scene: str(o.scene, 'task.scene', 4096),
    inputs: arr(o.inputs, 'task.inputs', 100_000, parseInput),
    width: o.width === undefined ? undefined : int(o.width, 'task.width', 1, 65536),
    height: o.height === undefined ? undefined : int(o.height, 'task.height', 1, 65536),
    outputPattern: pattern,
    command: o.command === undefined ? undefined : arr(o.command, 'task.command', 1000, (x, f) => str(x, f, 8192)),
    timeoutSec: o.timeoutSec === undefined ? undefined : int(o.timeoutSec, 'task.timeoutSec', 1),
    memory: o.memory === undefined ? undefined : int(o.memory, 'task.memory', 1),
    sandbox: o.sandbox === undefined ? undefined : { pathMap: arr(obj(o.sandbox, 'task.sandbox').pathMap, 'task.sandbox.pathMap', 100_000, (x, f) => { const m = obj(x, f); return { original: str(m.original, `${f}.original`, 4096), inside: str(m.inside, `${f}.inside`, 4096) } }) },
    allowScripts: bool(o.allowScripts, 'task.allowScripts'),
    jobStart: int(o.jobStart, 'task.jobStart'),
    jobEnd: int(o.jobEnd, 'task.jobEnd')
  }
}

export function parseRenderRequest (v: unknown): RenderRequest {
  const o = obj(v, 'request')
  const op = oneOf(o.op, 'op', ['dispatch', 'kill', 'running', 'host'] as const)
  if (op === 'running') return { op }
  if (op === 'host') return { op, action: oneOf(o.action, 'action', HOST_ACTIONS) }
  const term = int(o.term, 'term')
  if (op === 'dispatch') return { op, term, task: parseTask(o.task) }
  return { op, term, jobId: str(o.jobId, 'jobId', 64), index: o.index === undefined ? undefined : int(o.index, 'index') }
}

export async function callRenderer<T> (connection: Connection, req: RenderRequest, signal?: AbortSignal): Promise<T> {
  return await callRpc<T>(connection, RENDER_PROTOCOL, req, RENDER_LIMITS, signal)
}

export async function serveRenderer (stream: Stream, answer: (req: RenderRequest) => Promise<unknown>): Promise<void> {
  await serveRpc(stream, parseRenderRequest, answer, RENDER_LIMITS)
}

