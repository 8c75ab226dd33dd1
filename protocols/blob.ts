import { open, type FileHandle } from 'node:fs/promises'
import { Writable } from 'node:stream'
import { lpStream } from '@libp2p/utils'
import type { Connection, Stream, StreamCloseEvent, StreamMessageEvent } from '@libp2p/interface'
import { decodeJson, encodeJson, timeoutSignal } from './json-messages.js'
import { int, obj, str } from './schema.js'
import { ProtocolError } from '../node/errors.js'
import { assertBlobHash, isBlobHash, type BlobStore } from '../storage/blob-store.js'
import type { SiteMembership } from '../node/site-membership.js'

/**
 * /farmesh/blob/1.0.0 — fetch one content-addressed file from a peer.
 *
 *   client → server  LP JSON {hash}, then half-close
 *   server → client  LP JSON {ok:true,size} | {ok:false,reason}, then (ok) exactly
 *                    `size` raw bytes, then half-close
 *
 * This module also holds the bulk-transfer primitives `protocols/output.ts`
 * reuses: a header-then-raw-bytes receiver and a backpressured sender.
 */
export const BLOB_PROTOCOL = '/farmesh/blob/1.0.0'

export const DEFAULT_MAX_BLOB_BYTES = 8 * 1024 ** 3
/** Sender high-water mark: above it we wait for the write queue to empty ('idle'). */
export const SEND_HWM = 256 * 1024
/** Sliding inactivity timeout: no progress for this long aborts a transfer. */
export const STALL_MS = 30_000
/** Time to get a header / reply that needs no bulk data before it. */
export const HEADER_TIMEOUT_MS = 15_000
const MAX_HEADER_BYTES = 4096
const READ_CHUNK = 256 * 1024

export class BlobRefusedError extends Error {
  constructor (readonly reason: string) { super(`peer refused the blob: ${reason}`); this.name = 'BlobRefusedError' }
}

export class TransferStalledError extends Error {
  constructor (ms: number) { super(`no transfer progress for ${ms} ms`); this.name = 'TransferStalledError' }
}

export class TransferTooLargeError extends Error {
  constructor (message: string) { super(message); this.name = 'TransferTooLargeError' }
}

export class UnexpectedEndError extends Error {
  constructor (message: string) { super(message); this.name = 'UnexpectedEndError' }
}

// ---------------------------------------------------------------- framing

function encodeVarint (n: number): Uint8Array {
  const out: number[] = []
  while (n >= 0x80) { out.push((n % 0x80) | 0x80); n = Math.floor(n / 0x80) }
  out.push(n)
  return Uint8Array.from(out)
}

/** One LP JSON frame, byte-compatible with `lpStream` / `JsonStream`. */
export function encodeFrame (value: unknown): Uint8Array {
  const body = encodeJson(value)
  const prefix = encodeVarint(body.byteLength)
  const out = new Uint8Array(prefix.byteLength + body.byteLength)
  out.set(prefix, 0)
  out.set(body, prefix.byteLength)
  return out
}

/** [length, prefix bytes] or undefined if the varint is incomplete. */
function decodeVarint (buf: Uint8Array): [number, number] | undefined {
  let n = 0
  for (let i = 0; i < Math.min(buf.byteLength, 5); i++) {
    n += (buf[i] & 0x7f) * 2 ** (7 * i)
    if ((buf[i] & 0x80) === 0) return [n, i + 1]
  }
  if (buf.byteLength >= 5) throw new ProtocolError('header length prefix is malformed')
  return undefined
}

function chunksOf (data: StreamMessageEvent['data']): Uint8Array[] {
  return data instanceof Uint8Array ? [data] : [...data]
}

function abortReason (signal: AbortSignal): Error {
  return signal.reason instanceof Error ? signal.reason : new Error(String(signal.reason ?? 'aborted'))
}

/** A Writable that throws everything away (refused or duplicate uploads). */
export function discardSink (): Writable {
  return new Writable({ write (_chunk, _enc, cb) { cb() } })
}

// ---------------------------------------------------------------- receiving

interface Deferred<T> { promise: Promise<T>, resolve: (v: T) => void, reject: (e: Error) => void }
function deferred<T> (): Deferred<T> {
  let resolve!: (v: T) => void
  let reject!: (e: Error) => void
  const promise = new Promise<T>((res, rej) => { resolve = res; reject = rej })
  promise.catch(() => {}) // rejections are observed by whoever awaits; none may go unhandled
  return { promise, resolve, reject }
}

export interface BodyOptions {
  /** Refuse (and abort) once more than this many body bytes arrive. */
  maxBytes: number
  signal?: AbortSignal
  stallMs?: number
  onProgress?: (bytes: number) => void
}

/**
 * Reads one LP JSON header and then raw bytes to the end of the stream.
 *
 * Why not `lpStream(...).read()` + `unwrap()`: the byte stream reads ahead,
 * and `unwrap()` hands the surplus back with `stream.unshift()`, which throws
 * once the readable end has closed — exactly what happens when a small body
 * and the remote's FIN arrive before we get to unwrap. Its 'message' listener
 * also never pauses, so body bytes would pile up in its buffer. Here one
 * listener is attached for the stream's whole life and parses the header
 * itself, so no byte can be lost or reordered between header and body.
 *
 * End of data is "remote closed its write side and the stream's read buffer
 * is empty", checked a microtask after each event: yamux processes a FIN flag
 * before delivering the data of the same frame, so 'end'/'remoteCloseWrite'
 * alone may fire before the last bytes.
 *
 * After the header the stream is paused until `body()` attaches a sink, so
 * the caller may do async work (look up a file, ask the job table) first.
 * Any failure aborts the stream, unless the remote had already finished
 * sending — then the caller may still answer on it.
 */
export class FramedReceiver {
  private phase: 'header' | 'wait-body' | 'body' | 'finishing' | 'done' = 'header'
  private pending: Buffer[] = []
  private eof = false
  private received = 0
  private sink?: Writable
  private opts?: BodyOptions
  private timer?: NodeJS.Timeout
  private pausePending = false
  private failure?: Error
  private readonly header = deferred<Uint8Array>()
  private readonly done = deferred<number>()

  constructor (private readonly stream: Stream, private readonly maxHeaderBytes = MAX_HEADER_BYTES) {
    stream.addEventListener('message', this.onMessage)
    stream.addEventListener('remoteCloseWrite', this.scheduleEofCheck)
    stream.addEventListener('close', this.onClose)
  }

  /** The raw header bytes (the JSON, without its length prefix). */
  async readHeader (signal: AbortSignal): Promise<Uint8Array> {
    return await this.withSignal(this.header.promise, signal)
  }

  /**
   * Pipe the body into `sink` and resolve with the byte count once the remote
   * has finished and the sink has finished and closed (for a VerifyingWriter:
   * verified, committed, temp file gone). On failure the sink is destroyed and its 'close'
   * awaited before rejecting, so no temp file outlives the promise.
   */
  async body (sink: Writable, opts: BodyOptions): Promise<number> {
    if (this.phase !== 'wait-body') {
      const err = this.failure ?? new Error('body() called before the header was read')
      // the sink has no 'error' listener yet: destroying it with an error would be an unhandled 'error' event (a crash)
      if (!sink.closed) await new Promise((resolve) => { sink.once('close', resolve); sink.once('error', () => {}); sink.destroy(err) })
      throw err
    }
    this.phase = 'body'
    this.sink = sink
    this.opts = opts
    sink.on('error', (err) => { this.fail(err) })
    sink.on('drain', this.onSinkDrain)
    const early = this.pending
    this.pending = []
    for (const buf of early) this.write(buf)
    if (this.phase === 'body') {
      if (this.eof) this.finish()
      else if (!sink.writableNeedDrain) { this.resumeStream(); this.scheduleEofCheck() }
    }
    return await this.withSignal(this.done.promise, opts.signal)
  }

  /** Give up: abort the stream, reject pending reads, destroy the sink. */
  abort (err: Error): void { this.fail(err) }

  private readonly onMessage = (evt: StreamMessageEvent): void => {
    if (this.phase === 'done' || this.phase === 'finishing') return
    if (this.phase === 'body') {
      for (const buf of chunksOf(evt.data)) this.write(buf)
    } else {
      for (const buf of chunksOf(evt.data)) this.pending.push(Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength))
      if (this.phase === 'header') this.tryHeader()
    }
    this.armTimer()
    this.scheduleEofCheck()
  }

  private tryHeader (): void {
    const buf = this.pending.length === 1 ? this.pending[0] : Buffer.concat(this.pending)
    this.pending = [buf]
    let parsed: [number, number] | undefined
    try {
      parsed = decodeVarint(buf)
    } catch (err: any) { this.fail(err); return }
    if (parsed == null) return
    const [len, prefix] = parsed
    if (len > this.maxHeaderBytes) { this.fail(new ProtocolError(`header of ${len} bytes exceeds limit ${this.maxHeaderBytes}`)); return }
    if (buf.byteLength < prefix + len) return
    const rest = buf.subarray(prefix + len)
    this.pending = rest.byteLength > 0 ? [rest] : []
    this.phase = 'wait-body'
    // hold further data in the stream (bounded by the yamux window) while the caller decides
    this.pauseStream()
    this.header.resolve(buf.subarray(prefix, prefix + len))
  }

  private write (buf: Uint8Array): void {
    if (this.phase !== 'body') return
    this.received += buf.byteLength
    if (this.received > this.opts!.maxBytes) {
      this.fail(new TransferTooLargeError(`peer sent more than ${this.opts!.maxBytes} bytes`))
      return
    }
    if (!this.sink!.write(buf)) this.pauseStream()
    this.opts!.onProgress?.(this.received)
  }

  private readonly onSinkDrain = (): void => {
    if (this.phase === 'body') this.resumeStream()
  }

  private readonly scheduleEofCheck = (): void => {
    queueMicrotask(() => { this.checkEof() })
  }

  private checkEof (): void {
    const s = this.stream
    if (this.phase === 'done' || this.phase === 'finishing' || this.eof) return
    if (s.status === 'aborted' || s.status === 'reset') return // 'close' carries the error
    if (s.remoteWriteStatus !== 'closed' || s.readBufferLength > 0) return
    this.eof = true
    this.clearTimer()
    if (this.phase === 'header') this.fail(new UnexpectedEndError('stream ended before a complete header'))
    else if (this.phase === 'body') this.finish()
    // 'wait-body': body() finishes as soon as it has written what is pending
  }

  private finish (): void {
    this.phase = 'finishing'
    this.clearTimer()
    const sink = this.sink!
    // resolve on 'close', not 'finish': only then has _destroy removed any temp file
    sink.once('finish', () => {
      if (this.phase !== 'finishing') return
      sink.once('close', () => {
        if (this.phase !== 'finishing') return
        this.phase = 'done'
        this.detach()
        this.done.resolve(this.received)
      })
      sink.destroy()
    })
    sink.end()
  }

  private readonly onClose = (evt: StreamCloseEvent): void => {
    if (evt.error != null) { this.fail(evt.error); return }
    // closed cleanly: everything the remote sent has been delivered
    this.checkEof()
  }

  private fail (err: Error): void {
    if (this.phase === 'done') return
    this.phase = 'done'
    this.failure = err
    this.clearTimer()
    this.detach()
    if (!this.eof && this.stream.status === 'open') this.stream.abort(err)
    this.header.reject(err)
    const sink = this.sink
    if (sink == null || sink.closed) { this.done.reject(err); return }
    sink.once('close', () => { this.done.reject(err) })
    sink.destroy(err)
  }

  private detach (): void {
    this.stream.removeEventListener('message', this.onMessage)
    this.stream.removeEventListener('remoteCloseWrite', this.scheduleEofCheck)
    this.stream.removeEventListener('close', this.onClose)
    this.sink?.off('drain', this.onSinkDrain)
  }

  /**
   * Pause after the current dispatch, not inside it. `resume()` delivers the
   * buffered data to our listener and *then* re-opens the yamux window
   * (`sendResume`), so a pause made inside that delivery is undone at the
   * muxer: the stream says "paused" while the window keeps growing, and the
   * read buffer overflows its 4 MiB limit (seen as "Read buffer length …
   * exceeded limit … read status is paused" on long bundle pushes).
   */
  private pauseStream (): void {
    // waiting on our own disk or caller is not the peer's stall
    this.clearTimer()
    if (this.pausePending) return
    this.pausePending = true
    queueMicrotask(() => {
      this.pausePending = false
      if (this.phase === 'done' || this.phase === 'finishing') return
      if (this.phase === 'body' && this.sink != null && !this.sink.writableNeedDrain) return // drained meanwhile
      // a closed readable end cannot be paused, and nothing more will arrive anyway
      if (this.stream.readStatus === 'readable') this.stream.pause()
    })
  }

  private resumeStream (): void {
    if (this.stream.readStatus === 'paused') this.stream.resume()
    this.armTimer()
  }

  private armTimer (): void {
    // only while data flows: a pause is ours (slow disk), not the peer's
    if (this.phase !== 'body' || this.eof || this.stream.readStatus === 'paused') return
    const ms = this.opts?.stallMs ?? STALL_MS
    if (this.timer != null) { this.timer.refresh(); return }
    this.timer = setTimeout(() => { this.fail(new TransferStalledError(ms)) }, ms)
    this.timer.unref()
  }

  private clearTimer (): void {
    if (this.timer != null) clearTimeout(this.timer)
    this.timer = undefined
  }

  private async withSignal<T> (p: Promise<T>, signal?: AbortSignal): Promise<T> {
    if (signal == null) return await p
    if (signal.aborted) { this.fail(abortReason(signal)); return await p }
    const onAbort = (): void => { this.fail(abortReason(signal)) }
    signal.addEventListener('abort', onAbort, { once: true })
    try { return await p } finally { signal.removeEventListener('abort', onAbort) }
  }
}

// ---------------------------------------------------------------- sending

/**
 * Resolve when the stream's write queue is empty. Rejects if the stream
 * closes, the signal aborts, or nothing drains for `stallMs`.
 */
export async function waitIdle (stream: Stream, signal: AbortSignal | undefined, stallMs: number): Promise<void> {
  if (stream.writeBufferLength === 0) return
  signal?.throwIfAborted()
  await new Promise<void>((resolve, reject) => {
    const cleanup = (): void => {
      clearTimeout(timer)
      stream.removeEventListener('idle', onIdle)
      stream.removeEventListener('close', onClose)
      signal?.removeEventListener('abort', onAbort)
    }
    const onIdle = (): void => { cleanup(); resolve() }
    const onClose = (evt: StreamCloseEvent): void => { cleanup(); reject(evt.error ?? new UnexpectedEndError('stream closed while sending')) }
    const onAbort = (): void => { cleanup(); reject(abortReason(signal!)) }
    const timer = setTimeout(() => { cleanup(); reject(new TransferStalledError(stallMs)) }, stallMs)
    stream.addEventListener('idle', onIdle)
    stream.addEventListener('close', onClose)
    signal?.addEventListener('abort', onAbort, { once: true })
  })
}

export interface SendOptions {
  signal?: AbortSignal
  stallMs?: number
  hwm?: number
  onProgress?: (bytes: number) => void
}

/**
 * Send every chunk of `source`, keeping at most ~`hwm` bytes queued: above
 * it, wait for 'idle'. ('drain' fires on every yamux window update while
 * bytes are still queued, so waiting on it does not bound memory, and an
 * `onDrain()` loop spins — see the libp2p v3 notes.)
 */
export async function sendAll (stream: Stream, source: AsyncIterable<Uint8Array>, opts: SendOptions = {}): Promise<number> {
  const hwm = opts.hwm ?? SEND_HWM
  const stallMs = opts.stallMs ?? STALL_MS
  let sent = 0
  for await (const chunk of source) {
    opts.signal?.throwIfAborted()
    stream.send(chunk)
    sent += chunk.byteLength
    if (stream.writeBufferLength > hwm) await waitIdle(stream, opts.signal, stallMs)
    opts.onProgress?.(sent)
  }
  return sent
}

/** Send exactly `size` bytes of an open file; fewer means the file changed under us. */
export async function sendFileBytes (stream: Stream, path: string, size: number, opts: SendOptions = {}): Promise<void> {
  if (size === 0) return
  const fh = await open(path, 'r')
  try {
    const source = fh.createReadStream({ start: 0, end: size - 1, highWaterMark: READ_CHUNK, autoClose: false })
    const sent = await sendAll(stream, source, opts)
    if (sent !== size) throw new UnexpectedEndError(`file ${path} yielded ${sent} of ${size} bytes`)
  } finally {
    await fh.close()
  }
}

// ---------------------------------------------------------------- the protocol

export interface BlobRequest { hash: string }
export type BlobResponse = { ok: true, size: number } | { ok: false, reason: string }

export function parseBlobRequest (v: unknown): BlobRequest {
  const o = obj(v, 'request')
  const hash = str(o.hash, 'hash', 64)
  if (!isBlobHash(hash)) throw new ProtocolError('hash: expected 64 lowercase hex characters')
  return { hash }
}

export function parseBlobResponse (v: unknown): BlobResponse {
  const o = obj(v, 'response')
  if (o.ok === true) return { ok: true, size: int(o.size, 'size') }
  return { ok: false, reason: str(o.reason, 'reason', 512) }
}

/**
 * Server half. Bounded: the request by size and HEADER_TIMEOUT_MS, the body
 * by the file's size and a sliding STALL_MS while the client reads it.
 */
export async function handleBlob (stream: Stream, store: BlobStore, opts: { stallMs?: number } = {}): Promise<void> {
  const stallMs = opts.stallMs ?? STALL_MS
  // the client sends nothing after its request, so the read-ahead of lpStream is harmless here
  const lp = lpStream(stream, { maxDataLength: 1024, maxBufferSize: 4096 })
  const raw = await lp.read({ signal: timeoutSignal(HEADER_TIMEOUT_MS) })
  let req: BlobRequest
  try {
    req = decodeJson(raw.subarray(), parseBlobRequest)
  } catch (err: any) {
    await reply(stream, { ok: false, reason: err.message }, stallMs)
    return
  }
  // open before answering: the size we announce is the size of what we stream
  let fh: FileHandle
  try {
    fh = await open(store.path(req.hash), 'r')
  } catch (err: any) {
    await reply(stream, { ok: false, reason: err.code === 'ENOENT' ? 'not found' : 'unreadable' }, stallMs)
    return
  }
  try {
    const { size } = await fh.stat()
    stream.send(encodeFrame({ ok: true, size } satisfies BlobResponse))
    if (size > 0) {
      const source = fh.createReadStream({ start: 0, end: size - 1, highWaterMark: READ_CHUNK, autoClose: false })
      const sent = await sendAll(stream, source, { stallMs })
      if (sent !== size) throw new UnexpectedEndError(`blob ${req.hash} yielded ${sent} of ${size} bytes`)
    }
    await stream.close({ signal: timeoutSignal(stallMs) })
  } finally {
    await fh.close()
  }
}

async function reply (stream: Stream, res: BlobResponse, stallMs: number): Promise<void> {
  stream.send(encodeFrame(res))
  await stream.close({ signal: timeoutSignal(stallMs) })
}

/** Serve blobs to site members only. */
export async function registerBlobHandler (membership: SiteMembership, store: BlobStore, options: { maxInboundStreams?: number } = {}): Promise<void> {
  await membership.handle(BLOB_PROTOCOL, async (stream) => { await handleBlob(stream, store) }, { maxInboundStreams: options.maxInboundStreams ?? 32 })
}

export interface FetchOptions {
  /** Overall deadline / cancellation. */
  signal?: AbortSignal
  /** Refuse blobs larger than this (default 8 GiB). */
  maxBytes?: number
  /** Abort when no bytes arrive for this long (default 30 s). */
  stallMs?: number
  onProgress?: (received: number, total: number) => void
}

/**
 * Fetch `hash` from the peer at the other end of `connection` into `store`.
 * The bytes go through `store.createWriter`, so the blob appears in the store
 * only if it verifies; on any error nothing is left behind. A blob already in
 * the store is not fetched again.
 */
export async function fetchBlob (connection: Connection, hash: string, store: BlobStore, opts: FetchOptions = {}): Promise<{ size: number }> {
  assertBlobHash(hash)
  opts.signal?.throwIfAborted()
  if (await store.has(hash)) return { size: await store.size(hash) }
  const maxBytes = opts.maxBytes ?? DEFAULT_MAX_BLOB_BYTES
  const stream = await connection.newStream(BLOB_PROTOCOL, { signal: timeoutSignal(HEADER_TIMEOUT_MS, opts.signal) })
  const rx = new FramedReceiver(stream, 1024)
  try {
    const headerSignal = timeoutSignal(HEADER_TIMEOUT_MS, opts.signal)
    stream.send(encodeFrame({ hash } satisfies BlobRequest))
    await stream.close({ signal: headerSignal }) // our half is done; the server sees the request end
    const res = decodeJson(await rx.readHeader(headerSignal), parseBlobResponse)
    if (!res.ok) throw new BlobRefusedError(res.reason)
    if (res.size > maxBytes) throw new TransferTooLargeError(`blob ${hash} is ${res.size} bytes, limit ${maxBytes}`)
    const writer = store.createWriter(hash, res.size)
    await rx.body(writer, {
      maxBytes: res.size,
      signal: opts.signal,
      stallMs: opts.stallMs,
      onProgress: opts.onProgress != null ? (n) => { opts.onProgress!(n, res.size) } : undefined
    })
    return { size: res.size }
  } catch (err: any) {
    rx.abort(err)
    if (stream.status === 'open') stream.abort(err)
    throw err
  }
}
