import { lpStream } from '@libp2p/utils'
import type { Connection, Stream } from '@libp2p/interface'
import { setMaxListeners } from 'node:events'
import { ProtocolError } from '../node/errors.js'

/**
 * Length-prefixed JSON messages over a libp2p v3 stream. Every read is bounded
 * in size (`maxBytes`) and every exchange in time (`timeoutMs`): a peer that
 * sends too much or stalls gets its stream aborted, never our memory.
 */
export interface MessageLimits {
  maxBytes: number
  timeoutMs: number
}

export type Validator<T> = (value: unknown) => T

export function timeoutSignal (ms: number, parent?: AbortSignal): AbortSignal {
  const signal = parent != null ? AbortSignal.any([parent, AbortSignal.timeout(ms)]) : AbortSignal.timeout(ms)
  setMaxListeners(Infinity, signal)
  return signal
}

const encoder = new TextEncoder()
const decoder = new TextDecoder('utf-8', { fatal: true })

export function encodeJson (value: unknown): Uint8Array {
  return encoder.encode(JSON.stringify(value))
}

export function decodeJson<T> (bytes: Uint8Array, validate: Validator<T>): T {
  let parsed: unknown
  try {
    parsed = JSON.parse(decoder.decode(bytes))
  } catch (err: any) {
    throw new ProtocolError(`malformed message: ${err.message}`)
  }
  return validate(parsed)
}

export class JsonStream {
  private readonly lp
  constructor (readonly stream: Stream, readonly limits: MessageLimits) {
    this.lp = lpStream(stream, { maxDataLength: limits.maxBytes, maxBufferSize: Math.max(limits.maxBytes + 16, 64 * 1024) })
  }

  async read<T> (validate: Validator<T>, signal: AbortSignal): Promise<T> {
    const buf = await this.lp.read({ signal })
    return decodeJson(buf.subarray(), validate)
  }

  async write (value: unknown, signal: AbortSignal): Promise<void> {
    const bytes = encodeJson(value)
    if (bytes.byteLength > this.limits.maxBytes) throw new ProtocolError(`message of ${bytes.byteLength} bytes exceeds limit ${this.limits.maxBytes}`)
    await this.lp.write(bytes, { signal })
  }
}

/**
 * One request, one response: the client half. The stream is aborted on any
 * failure so the remote handler unblocks at once.
 */
export async function request<Req, Res> (connection: Connection, protocol: string, req: Req, validate: Validator<Res>, limits: MessageLimits, parent?: AbortSignal): Promise<Res> {
  const signal = timeoutSignal(limits.timeoutMs, parent)
  const stream = await connection.newStream(protocol, { signal })
  try {
    const js = new JsonStream(stream, limits)
    await js.write(req, signal)
    const res = await js.read(validate, signal)
    await stream.close({ signal })
    return res
  } catch (err: any) {
    stream.abort(err)
    throw err
  }
}

/** The server half: read one request, answer it, close. */
export async function respond<Req, Res> (stream: Stream, validate: Validator<Req>, answer: (req: Req) => Promise<Res> | Res, limits: MessageLimits): Promise<void> {
  const signal = timeoutSignal(limits.timeoutMs)
  const js = new JsonStream(stream, limits)
  const req = await js.read(validate, signal)
  const res = await answer(req)
  await js.write(res, signal)
  await stream.close({ signal })
}
