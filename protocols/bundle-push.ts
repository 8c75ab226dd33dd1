import type { Connection, Stream } from '@libp2p/interface'
import { createWriteStream } from 'node:fs'
import { stat } from 'node:fs/promises'
import { bool, int, obj, optStr, str } from './schema.js'
import { decodeJson, JsonStream, timeoutSignal } from './json-messages.js'
import { FramedReceiver, encodeFrame, sendAll, STALL_MS } from './blob.js'

/**
 * /farmesh/bundle/1.0.0 — push an outsourced job's encrypted, signed bundle
 * to a federated site. The receiver appends the ciphertext to a part file,
 * so an interrupted push resumes where it stopped instead of restarting: the
 * header says from which offset the sender sends, and a receiver holding a
 * different number of bytes answers `resumeAt` at once. Only when the last
 * byte is in does the receiver decrypt, verify and take the job in.
 */
export const BUNDLE_PROTOCOL = '/farmesh/bundle/1.0.0'
export const MAX_BUNDLE_BYTES = 64 * 1024 ** 3
const REPLY_TIMEOUT_MS = 120_000

export interface BundleHeader { jobId: string, nonce: string, offset: number, total: number }
export type BundleReply = { ok: true, accepted: boolean, remoteJobId?: string, reason?: string } | { ok: false, resumeAt?: number, reason: string }

export function parseBundleHeader (v: unknown): BundleHeader {
  const o = obj(v, 'header')
  const total = int(o.total, 'total', 1, MAX_BUNDLE_BYTES)
  const offset = int(o.offset, 'offset', 0, total)
  const jobId = str(o.jobId, 'jobId', 128)
  const nonce = str(o.nonce, 'nonce', 128)
  if (!/^[A-Za-z0-9._-]+$/.test(jobId) || !/^[A-Za-z0-9_-]+$/.test(nonce)) throw new Error('jobId/nonce: malformed')
  return { jobId, nonce, offset, total }
}

function parseReply (v: unknown): BundleReply {
  const o = obj(v, 'reply')
  if (o.ok === true) return { ok: true, accepted: bool(o.accepted, 'accepted'), remoteJobId: optStr(o.remoteJobId, 'remoteJobId', 128), reason: optStr(o.reason, 'reason', 4096) }
  return { ok: false, resumeAt: o.resumeAt === undefined ? undefined : int(o.resumeAt, 'resumeAt'), reason: str(o.reason, 'reason', 4096) }
}

async function sizeOf (path: string): Promise<number> {
  try { return (await stat(path)).size } catch { return 0 }
}

/**
 * Receiver. `partPath` names where this bundle's ciphertext accumulates;
 * `complete` runs once it is whole and answers whether the job was accepted.
 */
export async function handleBundlePush (stream: Stream, partPath: (h: BundleHeader) => Promise<string>, complete: (h: BundleHeader, path: string) => Promise<BundleReply>): Promise<void> {
  const rx = new FramedReceiver(stream)
  const send = async (r: BundleReply): Promise<void> => {
    stream.send(encodeFrame(r))
    await stream.close({ signal: timeoutSignal(STALL_MS) }).catch(() => {})
  }
  let header: BundleHeader
  try {
    header = decodeJson(await rx.readHeader(timeoutSignal(15_000)), parseBundleHeader)
  } catch (err: any) {
    rx.abort(err)
    return
  }
  const path = await partPath(header)
  const have = await sizeOf(path)
  if (have !== header.offset || have > header.total) {
    rx.abort(new Error('resume'))
    await send({ ok: false, resumeAt: have > header.total ? 0 : have, reason: `have ${have} bytes, not ${header.offset}` }).catch(() => {})
    return
  }
  if (have < header.total) {
    await rx.body(createWriteStream(path, { flags: 'a' }), { maxBytes: header.total - have, stallMs: STALL_MS })
  }
  const got = await sizeOf(path)
  if (got !== header.total) { await send({ ok: false, resumeAt: got, reason: `bundle incomplete: ${got} of ${header.total} bytes` }); return }
  await send(await complete(header, path))
}

/** Sender: push the ciphertext from `offset`; a `resumeAt` reply means: send again from there. */
export async function pushBundle (connection: Connection, header: BundleHeader, source: AsyncIterable<Uint8Array>, opts: { signal?: AbortSignal } = {}): Promise<BundleReply> {
  const stream = await connection.newStream(BUNDLE_PROTOCOL, { signal: timeoutSignal(15_000, opts.signal) })
  const js = new JsonStream(stream, { maxBytes: 16 * 1024, timeoutMs: REPLY_TIMEOUT_MS })
  const stop = new AbortController()
  const reply = js.read(parseReply, opts.signal != null ? AbortSignal.any([opts.signal, timeoutSignal(REPLY_TIMEOUT_MS * 10)]) : timeoutSignal(REPLY_TIMEOUT_MS * 10))
  reply.then(() => { stop.abort() }, () => { stop.abort() })
  try {
    stream.send(encodeFrame(header))
    try {
      await sendAll(stream, source, { signal: opts.signal != null ? AbortSignal.any([opts.signal, stop.signal]) : stop.signal })
    } catch (err) {
      if (!stop.signal.aborted) throw err
    }
    if (stream.writeStatus === 'writable') await stream.close({ signal: timeoutSignal(STALL_MS, opts.signal) })
    return await reply
  } catch (err: any) {
    if (stream.status === 'open') stream.abort(err)
    throw err
  }
}
