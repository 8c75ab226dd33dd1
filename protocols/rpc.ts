import type { Connection, Stream } from '@libp2p/interface'
import { obj, str, optStr } from './schema.js'
import { request, respond, type MessageLimits } from './json-messages.js'

/**
 * The request/reply shape shared by farmesh's control protocols: the reply is
 * `{ ok: true, result }` or `{ ok: false, error, name, field }`, so a refusal
 * travels back with the remote's reason and error name intact.
 */
export type RpcReply<T = unknown> = { ok: true, result: T } | { ok: false, error: string, name?: string, field?: string, status?: number }

export class RemoteError extends Error {
  /** the HTTP status the remote gave the error (an ApiError's), so a relayed refusal keeps it */
  constructor (message: string, name = 'RemoteError', readonly field?: string, readonly status?: number) { super(message); this.name = name }
}

function parseReply (v: unknown): RpcReply {
  const o = obj(v, 'reply')
  if (o.ok === true) return { ok: true, result: o.result }
  const status = typeof o.status === 'number' && Number.isInteger(o.status) && o.status >= 400 && o.status <= 599 ? o.status : undefined
  return { ok: false, error: str(o.error, 'error', 8192), name: optStr(o.name, 'name'), field: optStr(o.field, 'field'), status }
}

export async function callRpc<T> (connection: Connection, protocol: string, req: unknown, limits: MessageLimits, signal?: AbortSignal): Promise<T> {
  const reply = await request(connection, protocol, req, parseReply, limits, signal)
  if (!reply.ok) throw new RemoteError(reply.error, reply.name, reply.field, reply.status)
  return reply.result as T
}

/** Serve one request; a malformed request is answered with the validation error, not a reset. */
export async function serveRpc<Req> (stream: Stream, parse: (v: unknown) => Req, answer: (req: Req) => Promise<unknown>, limits: MessageLimits): Promise<void> {
  let parseError: unknown
  await respond(stream, (v) => { try { return parse(v) } catch (err) { parseError = err; return undefined } }, async (req): Promise<RpcReply> => {
    try {
      if (req === undefined) throw parseError
      return { ok: true, result: await answer(req) }
    } catch (err: any) {
      return { ok: false, error: err.message, name: err.name, field: err.field, status: Number.isInteger(err.status) ? err.status : undefined }
    }
  }, limits)
}
