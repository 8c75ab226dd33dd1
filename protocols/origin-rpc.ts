import type { Connection, Stream } from '@libp2p/interface'
import { obj, oneOf, str, optStr } from './schema.js'
import type { MessageLimits } from './json-messages.js'
import { callRpc, serveRpc } from './rpc.js'

/**
 * /farmesh/origin/1.0.0 — the scheduler tells a job's origin node that the
 * job has finished (done, failed or killed), so the origin can notify the
 * people who asked (the patent's FIGURE 6B, step 168).
 */
export const ORIGIN_PROTOCOL = '/farmesh/origin/1.0.0'
export const ORIGIN_LIMITS: MessageLimits = { maxBytes: 1024 * 1024, timeoutMs: 10_000 }

export interface FinishedRequest { op: 'finished', jobId: string, state: 'done' | 'failed' | 'killed', reason?: string, summary: Record<string, unknown> }

export function parseOriginRequest (v: unknown): FinishedRequest {
  const o = obj(v, 'request')
  oneOf(o.op, 'op', ['finished'] as const)
  return {
    op: 'finished',
    jobId: str(o.jobId, 'jobId', 64),
    state: oneOf(o.state, 'state', ['done', 'failed', 'killed'] as const),
    reason: optStr(o.reason, 'reason', 4096),
    summary: obj(o.summary, 'summary')
  }
}

export async function callOrigin (connection: Connection, req: FinishedRequest, signal?: AbortSignal): Promise<void> {
  await callRpc(connection, ORIGIN_PROTOCOL, req, ORIGIN_LIMITS, signal)
}

export async function serveOrigin (stream: Stream, answer: (req: FinishedRequest) => Promise<unknown>): Promise<void> {
  await serveRpc(stream, parseOriginRequest, answer, ORIGIN_LIMITS)
}
