import type { Connection, Stream } from '@libp2p/interface'
import { createReadStream } from 'node:fs'
import { open, rm, stat, type FileHandle } from 'node:fs/promises'
import { Writable } from 'node:stream'
import { bool, int, obj, optStr, str } from './schema.js'
import { decodeJson, JsonStream, timeoutSignal } from './json-messages.js'
import { FramedReceiver, discardSink, encodeFrame, sendAll, STALL_MS } from './blob.js'
import { writeFully } from '../storage/blob-store.js'

/**
 * /farmesh/bundle/1.1.0 — push an outsourced job's encrypted, signed bundle
 * to a federated site.
 *
 *   sender → receiver   LP JSON {jobId, nonce, offset, probe?}, then the
 *                       ciphertext from `offset` to its end, then half-close
 *   receiver → sender   LP JSON BundleReply (possibly before the sender is done)
 *
 * The receiver takes the bundle in *while it arrives*: bytes are appended to
 * a part file (so an interrupted push resumes from the receiver's offset
 * instead of restarting) and, at the same time, fed to the intake, which
 * decrypts, verifies and unpacks them. A resumed push feeds the intake the
 * part file's bytes first, then the new ones. The intake's verdict is the
 * reply: accepted, refused with a reason (sent as soon as it is known, e.g.
 * right after the manifest, and the sender stops), or `resumeAt` when the
 * stream ended early. A `probe` header only asks for `resumeAt`.
 *
 * 1.0.0 spooled the whole bundle on both sides before unpacking it; 1.1.0
 * drops the up-front `total` (the bundle's own final chunk says where it
 * ends) and adds `probe`.
 */
export const BUNDLE_PROTOCOL = '/farmesh/bundle/1.1.0'
export const MAX_BUNDLE_BYTES = 64 * 1024 ** 3
const REPLY_TIMEOUT_MS = 120_000
/** ciphertext held between the network and the intake; the part file and yamux window bound the rest */
const CHANNEL_BYTES = 1024 * 1024
const SINK_HWM = 256 * 1024

export interface BundleHeader { jobId: string, nonce: string, offset: number, probe?: boolean }
export type BundleReply = { ok: true, accepted: boolean, remoteJobId?: string, reason?: string } | { ok: false, resumeAt?: number, reason: string }
/** What an intake decides about a whole, verified bundle. A thrown error is a refusal too, or a cut-off stream. */
export interface IntakeVerdict { accepted: boolean, remoteJobId?: string, reason?: string }

export function parseBundleHeader (v: unknown): BundleHeader {
  const o = obj(v, 'header')
  const offset = int(o.offset, 'offset', 0, MAX_BUNDLE_BYTES)
  const jobId = str(o.jobId, 'jobId', 128)
  const nonce = str(o.nonce, 'nonce', 128)
  if (!/^[A-Za-z0-9._-]+$/.test(jobId) || !/^[A-Za-z0-9_-]+$/.test(nonce)) throw new Error('jobId/nonce: malformed')
  return { jobId, nonce, offset, ...(o.probe === undefined ? {} : { probe: bool(o.probe, 'probe') }) }
}

function parseReply (v: unknown): BundleReply {
  const o = obj(v, 'reply')
  if (o.ok === true) return { ok: true, accepted: bool(o.accepted, 'accepted'), remoteJobId: optStr(o.remoteJobId, 'remoteJobId', 128), reason: optStr(o.reason, 'reason', 4096) }
  return { ok: false, resumeAt: o.resumeAt === undefined ? undefined : int(o.resumeAt, 'resumeAt'), reason: str(o.reason, 'reason', 4096) }
}

async function sizeOf (path: string): Promise<number> {
  try { return (await stat(path)).size } catch { return 0 }
}

// ---------------------------------------------------------------- receiving

/**
 * A bounded hand-over of byte chunks from a writer to one async reader.
 * `push` waits while more than `limit` bytes are queued; when the reader
 * stops early, pushes are dropped instead of waiting forever.
 */
export class ByteChannel implements AsyncIterable<Buffer> {
  private queue: Buffer[] = []
  private queued = 0
  private ended = false
  private readerGone = false
  private error?: Error
  private wakeReader?: () => void
  private wakeWriter?: () => void

  constructor (private readonly limit: number) {}

  async push (bufs: Buffer[]): Promise<void> {
    while (this.queued >= this.limit && !this.readerGone && this.error == null) {
      await new Promise<void>(resolve => { this.wakeWriter = resolve })
    }
    if (this.readerGone || this.ended || this.error != null) return
    for (const b of bufs) { this.queue.push(b); this.queued += b.byteLength }
    this.wake()
  }

  end (): void { this.ended = true; this.wake() }
  fail (err: Error): void { this.error ??= err; this.wake() }

  private wake (): void {
    const r = this.wakeReader; this.wakeReader = undefined; r?.()
    const w = this.wakeWriter; this.wakeWriter = undefined; w?.()
  }

  async * [Symbol.asyncIterator] (): AsyncGenerator<Buffer> {
    try {
      for (;;) {
        if (this.error != null) throw this.error
        const next = this.queue.shift()
        if (next !== undefined) {
          this.queued -= next.byteLength
          const w = this.wakeWriter; this.wakeWriter = undefined; w?.()
          yield next
          continue
        }
        if (this.ended) return
        await new Promise<void>(resolve => { this.wakeReader = resolve })
      }
    } finally {
      this.readerGone = true
      this.queue = []
      this.queued = 0
      this.wake()
    }
  }
}

/** Appends what arrives to the part file and hands the same bytes to the intake. */
class TeeSink extends Writable {
  /** the network side failed (reset, stall): the bundle may be resumed */
  interrupted = false
  private discarding = false
  private fh?: FileHandle
  readonly channel = new ByteChannel(CHANNEL_BYTES)

  constructor (private readonly path: string) { super({ highWaterMark: SINK_HWM }) }

  override _construct (cb: (err?: Error | null) => void): void {
    open(this.path, 'a', 0o600).then(fh => { this.fh = fh; cb() }, cb)
  }

  override _writev (chunks: Array<{ chunk: any }>, cb: (err?: Error | null) => void): void {
    if (this.discarding) { cb(); return }
    const bufs = chunks.map(c => c.chunk as Buffer)
    Promise.all([writeFully(this.fh!, bufs), this.channel.push(bufs)]).then(() => { cb() }, cb)
  }

  override _final (cb: (err?: Error | null) => void): void { this.channel.end(); cb() }

  override _destroy (err: Error | null, cb: (err?: Error | null) => void): void {
    if (err != null) { this.interrupted = true; this.channel.fail(err) } else this.channel.end()
    const fh = this.fh
    this.fh = undefined
    if (fh == null) { cb(err); return }
    fh.close().then(() => { cb(err) }, () => { cb(err) })
  }

  /** The intake has decided: keep the part file as it is and throw the rest of the stream away. */
  discard (): void { this.discarding = true; this.channel.end() }
}

async function * partThenLive (path: string, have: number, live: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
  if (have > 0) yield * createReadStream(path, { start: 0, end: have - 1, highWaterMark: SINK_HWM })
  yield * live
}

export interface BundleIntake {
  /** where this bundle's ciphertext accumulates between attempts */
  partPath: (h: BundleHeader) => Promise<string>
  /** the whole ciphertext from byte 0 as it arrives; decide. Throw to refuse. */
  take: (h: BundleHeader, source: AsyncIterable<Uint8Array>) => Promise<IntakeVerdict>
}

export interface BundleReceiverOptions {
  /** a thrown error that means "the stream was cut short", not "the bundle is bad" */
  isTruncation: (err: unknown) => boolean
  log?: (line: string) => void
}

/** Receiver: one per node; it refuses a second concurrent push of the same bundle. */
export class BundleReceiver {
  private readonly active = new Set<string>()

  constructor (private readonly opts: BundleReceiverOptions) {}

  async handle (stream: Stream, intake: BundleIntake): Promise<void> {
    const rx = new FramedReceiver(stream)
    let header: BundleHeader
    try {
      header = decodeJson(await rx.readHeader(timeoutSignal(15_000)), parseBundleHeader)
    } catch (err: any) {
      rx.abort(err)
      // the receiver leaves a stream whose sender already finished open: reset it, or the sender waits for an answer
      if (stream.status === 'open') stream.abort(err)
      return
    }
    const path = await intake.partPath(header)
    const have = await sizeOf(path)
    if (this.active.has(path) || header.probe === true || have !== header.offset) {
      const reason = this.active.has(path) ? 'another push of this bundle is in progress' : header.probe === true ? 'probe' : `have ${have} bytes, not ${header.offset}`
      await replyAndDrain(stream, rx, undefined, { ok: false, resumeAt: have, reason })
      return
    }
    this.active.add(path)
    const tee = new TeeSink(path)
    try {
      const body = rx.body(tee, { maxBytes: MAX_BUNDLE_BYTES - have, stallMs: STALL_MS })
      body.catch(() => {}) // its failure reaches the intake through the channel
      let reply: BundleReply
      try {
        const v = await intake.take(header, partThenLive(path, have, tee.channel))
        reply = { ok: true, accepted: v.accepted, ...(v.remoteJobId != null ? { remoteJobId: v.remoteJobId } : {}), ...(v.reason != null ? { reason: v.reason } : {}) }
      } catch (err: any) {
        if (tee.interrupted || this.opts.isTruncation(err)) {
          tee.discard()
          const at = await sizeOf(path)
          this.opts.log?.(`bundle ${header.jobId} incomplete at ${at} bytes (${err.message}): the sender may resume`)
          reply = { ok: false, resumeAt: at, reason: `bundle incomplete at ${at} bytes: ${err.message}` }
        } else {
          reply = { ok: true, accepted: false, reason: err.message }
        }
      }
      tee.discard()
      // decided: a refused or accepted bundle is not resumed
      if (reply.ok) await rm(path, { force: true })
      // the part file is settled: a resumed push may come in while this stream drains
      this.active.delete(path)
      await replyAndDrain(stream, rx, body, reply)
    } finally {
      this.active.delete(path)
    }
  }
}

/** Answer, then let what the sender still had in flight run out (it stops when it reads the answer). */
async function replyAndDrain (stream: Stream, rx: FramedReceiver, body: Promise<number> | undefined, reply: BundleReply): Promise<void> {
  try {
    stream.send(encodeFrame(reply))
  } catch {
    return // the stream is gone: nobody to answer
  }
  const drained = body ?? rx.body(discardSink(), { maxBytes: MAX_BUNDLE_BYTES, stallMs: STALL_MS })
  await Promise.race([drained.catch(() => {}), new Promise(resolve => setTimeout(resolve, STALL_MS).unref())])
  if (stream.status === 'open') await stream.close({ signal: timeoutSignal(STALL_MS) }).catch(() => { stream.abort(new Error('close timed out')) })
}

// ---------------------------------------------------------------- sending

/** Sender: push the ciphertext from `header.offset`; stops as soon as the receiver answers. */
export async function pushBundle (connection: Connection, header: BundleHeader, source: AsyncIterable<Uint8Array>, opts: { signal?: AbortSignal, onProgress?: (bytes: number) => void } = {}): Promise<BundleReply> {
  const stream = await connection.newStream(BUNDLE_PROTOCOL, { signal: timeoutSignal(15_000, opts.signal) })
  const js = new JsonStream(stream, { maxBytes: 16 * 1024, timeoutMs: REPLY_TIMEOUT_MS })
  const stop = new AbortController()
  const reply = js.read(parseReply, opts.signal != null ? AbortSignal.any([opts.signal, timeoutSignal(REPLY_TIMEOUT_MS * 10)]) : timeoutSignal(REPLY_TIMEOUT_MS * 10))
  reply.then(() => { stop.abort() }, () => { stop.abort() })
  try {
    stream.send(encodeFrame(header))
    try {
      await sendAll(stream, source, { signal: opts.signal != null ? AbortSignal.any([opts.signal, stop.signal]) : stop.signal, onProgress: opts.onProgress })
    } catch (err) {
      if (!stop.signal.aborted) throw err
    }
    if (stream.writeStatus === 'writable') await stream.close({ signal: timeoutSignal(STALL_MS, opts.signal) }).catch(() => {})
    return await reply
  } catch (err: any) {
    if (stream.status === 'open') stream.abort(err)
    throw err
  }
}

/** How many bytes of this bundle the receiver holds (where a push resumes). */
export async function probeBundle (connection: Connection, header: Omit<BundleHeader, 'offset' | 'probe'>, signal?: AbortSignal): Promise<number> {
  const r = await pushBundle(connection, { ...header, offset: 0, probe: true }, (async function * () {})(), { signal })
  return !r.ok && r.resumeAt != null ? r.resumeAt : 0
}
