import { randomBytes } from 'node:crypto'
import { constants } from 'node:fs'
import { chmod, copyFile, link, rm, stat } from 'node:fs/promises'
import { basename, dirname, join } from 'node:path'
import type { Connection, PeerId, Stream } from '@libp2p/interface'
import { JsonStream, decodeJson, timeoutSignal } from './json-messages.js'
import { bool, int, obj, str } from './schema.js'
import { ProtocolError } from '../node/errors.js'
import { VerifyingWriter, isBlobHash } from '../storage/blob-store.js'
import { FramedReceiver, HEADER_TIMEOUT_MS, STALL_MS, discardSink, encodeFrame, sendFileBytes } from './blob.js'

/**
 * /farmesh/output/1.0.0 — a renderer pushes one finished output file to the
 * job's origin.
 *
 *   renderer → origin  LP JSON OutputHeader, raw bytes (exactly `size`), half-close
 *   origin → renderer  LP JSON {ok:true, stored} | {ok:false, reason}, half-close
 *
 * The origin writes to a temp file beside the destination, verifies size and
 * sha256, then hard-links it into place with link(2), which fails if the name
 * exists: the first complete output of a frame wins, atomically, even when
 * two attempts finish at once; the loser is answered `stored: false`.
 *
 * Refused and duplicate uploads are answered as soon as the header is read;
 * the origin then discards what is in flight until the renderer, which
 * watches for an early reply while sending, stops and half-closes. So a
 * duplicate 4 GiB frame costs a few hundred KiB of traffic, not 4 GiB, and
 * both ends still close cleanly (a reset right after the reply could race
 * the reply itself).
 */
export const OUTPUT_PROTOCOL = '/farmesh/output/1.0.0'
export const MAX_OUTPUT_BYTES = 4 * 1024 ** 3
const NAME_RE = /^[A-Za-z0-9._-]{1,200}$/
const JOB_ID_RE = /^[a-z0-9-]{4,64}$/
/** Time the origin may take to verify, link and record after the last byte. */
const REPLY_TIMEOUT_MS = 60_000
/** How long a refused/duplicate upload may keep sending after our early reply. */
const DISCARD_MS = 30_000

export interface OutputHeader {
  jobId: string
  frame: number
  /** a plain file name; the origin decides the directory */
  name: string
  size: number
  hash: string
  /** the dispatch (attemptId) that produced it */
  attempt: string
  /** peer id of the renderer, for the job's record */
  host: string
}

export type OutputReply = { ok: true, stored: boolean } | { ok: false, reason: string }

export type AcceptDecision = { dest: string } | { refuse: string } | { duplicate: true }

/** What `handleOutput` did, so the origin can log or count it. */
export type OutputOutcome =
  | { status: 'stored', header: OutputHeader, dest: string }
  | { status: 'duplicate', header: OutputHeader }
  | { status: 'refused', header?: OutputHeader, reason: string }
  | { status: 'failed', header: OutputHeader, error: Error }

export class OutputRefusedError extends Error {
  constructor (readonly reason: string) { super(`origin refused the output: ${reason}`); this.name = 'OutputRefusedError' }
}

export function parseOutputHeader (v: unknown): OutputHeader {
  const o = obj(v, 'header')
  const jobId = str(o.jobId, 'jobId', 64)
  if (!JOB_ID_RE.test(jobId)) throw new ProtocolError('jobId: malformed job id')
  const name = str(o.name, 'name', 200)
  // the origin joins it to a directory: no separators, no `.`/`..`
  if (!NAME_RE.test(name) || name === '.' || name === '..') throw new ProtocolError('name: must be a plain file name of [A-Za-z0-9._-]')
  const hash = str(o.hash, 'hash', 64)
  if (!isBlobHash(hash)) throw new ProtocolError('hash: expected 64 lowercase hex characters')
  return {
    jobId,
    frame: int(o.frame, 'frame'),
    name,
    size: int(o.size, 'size', 0, MAX_OUTPUT_BYTES),
    hash,
    attempt: str(o.attempt, 'attempt', 64),
    host: str(o.host, 'host', 128)
  }
}

export function parseOutputReply (v: unknown): OutputReply {
  const o = obj(v, 'reply')
  if (o.ok === true) return { ok: true, stored: bool(o.stored, 'stored') }
  return { ok: false, reason: str(o.reason, 'reason', 512) }
}

/** link(2) refuses an existing name: the atomic "first one wins". */
async function placeExclusive (tmp: string, dest: string): Promise<boolean> {
  await chmod(tmp, 0o644)
  try {
    await link(tmp, dest)
    return true
  } catch (err: any) {
    if (err.code === 'EEXIST') return false
    if (!['EPERM', 'EXDEV', 'ENOTSUP', 'EOPNOTSUPP', 'EMLINK'].includes(err.code)) throw err
  }
  // no hard links here (e.g. FAT, some network mounts): exclusive copy, not atomic
  try {
    await copyFile(tmp, dest, constants.COPYFILE_EXCL)
    return true
  } catch (err: any) {
    if (err.code === 'EEXIST') return false
    throw err
  }
}

export interface HandleOutputOptions {
  stallMs?: number
  acceptTimeoutMs?: number
  /**
   * Runs after the file is in place and before the renderer is told
   * `stored: true` (so "the renderer saw stored" implies "recorded"). If it
   * throws, the file is removed and the renderer told `ok: false` to retry.
   */
  onStored?: (header: OutputHeader, dest: string, remotePeer: PeerId) => Promise<void>
}

async function answer (stream: Stream, reply: OutputReply, signal: AbortSignal): Promise<void> {
  stream.send(encodeFrame(reply))
  await stream.close({ signal })
}

/** Answer before the body, then discard the rest until the renderer stops. */
async function answerEarly (stream: Stream, rx: FramedReceiver, reply: OutputReply, maxBytes: number, stallMs: number): Promise<void> {
  const signal = timeoutSignal(DISCARD_MS)
  await answer(stream, reply, signal)
  // a renderer that keeps sending past the deadline is cut off; the reply is already out
  await rx.body(discardSink(), { maxBytes, signal, stallMs }).catch(() => {})
}

/**
 * Server half. `accept` maps the header to a destination path (the origin's
 * outputs dir), a refusal, or "already have it". The stream is paused while
 * it runs. Resolves with what happened; rejects (stream aborted) when the
 * transfer itself broke: stalled, reset, too many bytes.
 *
 * If `accept` returns `{dest}` for a name that already exists on disk, the
 * upload is answered `stored: false`: an existing file always wins. An
 * origin that finds a file its records do not know (crash between link and
 * record) should delete it in `accept`.
 */
export async function handleOutput (
  stream: Stream,
  connection: Connection,
  accept: (header: OutputHeader, remotePeer: PeerId) => Promise<AcceptDecision>,
  opts: HandleOutputOptions = {}
): Promise<OutputOutcome> {
  const stallMs = opts.stallMs ?? STALL_MS
  const rx = new FramedReceiver(stream, 4096)
  const raw = await rx.readHeader(timeoutSignal(HEADER_TIMEOUT_MS))
  let header: OutputHeader
  try {
    header = decodeJson(raw, parseOutputHeader)
  } catch (err: any) {
    if (err.name !== 'ProtocolError') throw err
    await answerEarly(stream, rx, { ok: false, reason: err.message }, MAX_OUTPUT_BYTES, stallMs)
    return { status: 'refused', reason: err.message }
  }

  let decision: AcceptDecision
  try {
    decision = await withTimeout(accept(header, connection.remotePeer), opts.acceptTimeoutMs ?? HEADER_TIMEOUT_MS)
  } catch (err: any) {
    rx.abort(err)
    throw err
  }
  if ('refuse' in decision) {
    await answerEarly(stream, rx, { ok: false, reason: decision.refuse }, header.size, stallMs)
    return { status: 'refused', header, reason: decision.refuse }
  }
  if ('duplicate' in decision) {
    await answerEarly(stream, rx, { ok: true, stored: false }, header.size, stallMs)
    return { status: 'duplicate', header }
  }

  const dest = decision.dest
  let stored = false
  const tmp = join(dirname(dest), `.${basename(dest)}.${randomBytes(8).toString('hex')}.part`)
  const writer = new VerifyingWriter(tmp, header.hash, header.size, async (t) => { stored = await placeExclusive(t, dest) })
  try {
    await rx.body(writer, { maxBytes: header.size, stallMs })
  } catch (err: any) {
    // all bytes arrived but they are wrong: the renderer is still listening, tell it
    if (err.name === 'BlobIntegrityError' && stream.writeStatus === 'writable' && stream.status === 'open') {
      await answer(stream, { ok: false, reason: err.message }, timeoutSignal(stallMs))
      return { status: 'failed', header, error: err }
    }
    throw err
  }
  const signal = timeoutSignal(REPLY_TIMEOUT_MS)
  if (stored && opts.onStored != null) {
    try {
      await opts.onStored(header, dest, connection.remotePeer)
    } catch (err: any) {
      await rm(dest, { force: true })
      await answer(stream, { ok: false, reason: `origin could not record the output: ${String(err.message)}` }, signal)
      return { status: 'failed', header, error: err }
    }
  }
  await answer(stream, { ok: true, stored }, signal)
  return stored ? { status: 'stored', header, dest } : { status: 'duplicate', header }
}

async function withTimeout<T> (p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  try {
    return await Promise.race([p, new Promise<never>((_resolve, reject) => {
      timer = setTimeout(() => { reject(new ProtocolError(`output not accepted or refused within ${ms} ms`)) }, ms)
    })])
  } finally {
    clearTimeout(timer)
  }
}

export interface PushOptions {
  /** the same exchange on another protocol id (federation's remote outputs) */
  protocol?: string
  signal?: AbortSignal
  stallMs?: number
  onProgress?: (sent: number, total: number) => void
}

/**
 * Client half: stream `filePath` to the origin and return whether it stored
 * this copy (false: it already had the frame). Throws OutputRefusedError when
 * the origin says no (unknown job, bad header, bytes did not verify).
 */
export async function pushOutput (connection: Connection, header: OutputHeader, filePath: string, opts: PushOptions = {}): Promise<{ stored: boolean }> {
  const h = parseOutputHeader(header) // same rules as the origin: fail before connecting
  const { size } = await stat(filePath)
  if (size !== h.size) throw new ProtocolError(`${filePath} is ${size} bytes, the header says ${h.size}`)
  const stallMs = opts.stallMs ?? STALL_MS
  const stream = await connection.newStream(opts.protocol ?? OUTPUT_PROTOCOL, { signal: timeoutSignal(HEADER_TIMEOUT_MS, opts.signal) })

  // Listen for the reply from the start: it may come early (refused/duplicate).
  const replyDeadline = new AbortController()
  const replySignal = opts.signal != null ? AbortSignal.any([opts.signal, replyDeadline.signal]) : replyDeadline.signal
  const stopSending = new AbortController()
  const js = new JsonStream(stream, { maxBytes: 1024, timeoutMs: REPLY_TIMEOUT_MS })
  const reply = js.read(parseOutputReply, replySignal)
  reply.then(() => { stopSending.abort() }, () => { stopSending.abort() })
  let timer: NodeJS.Timeout | undefined
  try {
    stream.send(encodeFrame(h))
    const sendSignal = opts.signal != null ? AbortSignal.any([opts.signal, stopSending.signal]) : stopSending.signal
    try {
      await sendFileBytes(stream, filePath, h.size, {
        signal: sendSignal,
        stallMs,
        onProgress: opts.onProgress != null ? (n) => { opts.onProgress!(n, h.size) } : undefined
      })
    } catch (err) {
      // stopped because the origin already answered: that answer is what counts
      if (!stopSending.signal.aborted || opts.signal?.aborted === true) throw err
    }
    if (stream.writeStatus === 'writable') await stream.close({ signal: timeoutSignal(stallMs, opts.signal) })
    timer = setTimeout(() => { replyDeadline.abort(new ProtocolError(`no reply from the origin within ${REPLY_TIMEOUT_MS} ms`)) }, REPLY_TIMEOUT_MS)
    const res = await reply
    if (!res.ok) throw new OutputRefusedError(res.reason)
    return { stored: res.stored }
  } catch (err: any) {
    if (stream.status === 'open') stream.abort(err)
    throw err
  } finally {
    clearTimeout(timer)
  }
}
