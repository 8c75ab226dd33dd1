import '../../node/polyfill.js'
import { createHash, randomBytes } from 'node:crypto'
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { lpStream, streamPair } from '@libp2p/utils'
import type { Connection, Libp2p, Stream } from '@libp2p/interface'
import { createHost } from '../../node/libp2p-host.js'
import { JsonStream, decodeJson } from '../../protocols/json-messages.js'
import { BLOB_PROTOCOL, FramedReceiver, encodeFrame, fetchBlob, handleBlob, parseBlobRequest, sendAll } from '../../protocols/blob.js'
import { OUTPUT_PROTOCOL, handleOutput, parseOutputReply, pushOutput, type AcceptDecision, type OutputHeader, type OutputOutcome } from '../../protocols/output.js'
import { BlobStore, hashFile } from '../../storage/blob-store.js'

const sha256 = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex')

async function node (): Promise<Libp2p> {
  return await createHost({ privateKey: await generateKeyPair('Ed25519'), listen: ['/ip4/127.0.0.1/tcp/0'], isRefused: () => false }) as unknown as Libp2p
}

let tmp: string
let server: Libp2p // serves good blobs and accepts outputs
let liar: Libp2p // serves corrupted blobs
let client: Libp2p
let serverStore: BlobStore
let clientStore: BlobStore
let toServer: Connection
let toLiar: Connection
const outcomes: OutputOutcome[] = []
let decide: (h: OutputHeader) => AcceptDecision

/** The liar's behaviour for the next request. */
let lie: (stream: Stream, hash: string) => void

beforeAll(async () => {
  tmp = mkdtempSync(join(tmpdir(), 'farmesh-blob-'))
  serverStore = new BlobStore(join(tmp, 'server-blobs'))
  clientStore = new BlobStore(join(tmp, 'client-blobs'))
  await serverStore.init()
  await clientStore.init()
  ;[server, liar, client] = await Promise.all([node(), node(), node()])

  await server.handle(BLOB_PROTOCOL, async (stream) => { await handleBlob(stream, serverStore) })
  await server.handle(OUTPUT_PROTOCOL, async (stream, connection) => {
    outcomes.push(await handleOutput(stream, connection, async (h) => decide(h)))
  })
  await liar.handle(BLOB_PROTOCOL, async (stream) => {
    const lp = lpStream(stream)
    const req = decodeJson((await lp.read()).subarray(), parseBlobRequest)
    lie(stream, req.hash)
    await stream.close()
  })

  toServer = await client.dial(server.getMultiaddrs()[0])
  toLiar = await client.dial(liar.getMultiaddrs()[0])
}, 30_000)

afterAll(async () => {
  await Promise.all([server, liar, client].map(async n => await n?.stop()))
  rmSync(tmp, { recursive: true, force: true })
})

/** A random file put into the server's store. */
async function serverBlob (size: number): Promise<{ hash: string, bytes: Buffer }> {
  const bytes = randomBytes(size)
  const file = join(tmp, `src-${randomBytes(4).toString('hex')}`)
  writeFileSync(file, bytes)
  const { hash } = await serverStore.putFile(file)
  return { hash, bytes }
}

function clientTempFiles (): string[] {
  return readdirSync(join(clientStore.root, 'tmp'))
}

describe('blob store', () => {
  it('puts, dedups, materializes, and rejects hashes that are not 64 hex', async () => {
    const store = new BlobStore(join(tmp, 'store-only'))
    await store.init()
    const file = join(tmp, 'put-me')
    writeFileSync(file, 'hello')
    const a = await store.putFile(file)
    const b = await store.putFile(file)
    expect(a).toEqual({ hash: sha256(Buffer.from('hello')), size: 5 })
    expect(b).toEqual(a)
    expect(await store.has(a.hash)).toBe(true)
    expect(await store.size(a.hash)).toBe(5)
    await store.materialize(a.hash, join(tmp, 'mat', 'x.txt'))
    expect(readFileSync(join(tmp, 'mat', 'x.txt'), 'utf8')).toBe('hello')
    for (const bad of ['../../etc/passwd', 'A'.repeat(64), `${a.hash.slice(0, 63)}/`, '']) {
      expect(() => store.path(bad)).toThrow(expect.objectContaining({ name: 'InvalidBlobHashError' }))
    }
    expect(readdirSync(join(store.root, 'tmp'))).toEqual([])
  })
})

describe('/farmesh/blob/1.0.0', () => {
  it('fetches a 20 MiB blob and verifies it', async () => {
    const { hash, bytes } = await serverBlob(20 * 1024 * 1024)
    let progress = 0
    const res = await fetchBlob(toServer, hash, clientStore, { signal: AbortSignal.timeout(30_000), onProgress: (n) => { progress = n } })
    expect(res.size).toBe(bytes.byteLength)
    expect(progress).toBe(bytes.byteLength)
    expect(await hashFile(clientStore.path(hash))).toEqual({ hash, size: bytes.byteLength })
    expect(readFileSync(clientStore.path(hash)).equals(bytes)).toBe(true)
    expect(clientTempFiles()).toEqual([])
  }, 60_000)

  it.each([0, 1, 100, 70_000])('fetches a %d-byte blob (body and FIN may arrive with the header)', async (size) => {
    const { hash, bytes } = await serverBlob(size)
    const res = await fetchBlob(toServer, hash, clientStore, { signal: AbortSignal.timeout(10_000) })
    expect(res.size).toBe(size)
    expect(readFileSync(clientStore.path(hash)).equals(bytes)).toBe(true)
  })

  it('refuses an unknown hash cleanly', async () => {
    const hash = sha256(randomBytes(8))
    await expect(fetchBlob(toServer, hash, clientStore, { signal: AbortSignal.timeout(10_000) }))
      .rejects.toMatchObject({ name: 'BlobRefusedError', reason: 'not found' })
    expect(await clientStore.has(hash)).toBe(false)
  })

  it('rejects corrupted bytes with BlobIntegrityError and keeps nothing', async () => {
    const good = randomBytes(3 * 1024 * 1024)
    const hash = sha256(good)
    lie = (stream) => {
      const bad = Buffer.from(good)
      bad[12345] ^= 1
      stream.send(encodeFrame({ ok: true, size: bad.byteLength }))
      stream.send(bad)
    }
    await expect(fetchBlob(toLiar, hash, clientStore, { signal: AbortSignal.timeout(10_000) }))
      .rejects.toMatchObject({ name: 'BlobIntegrityError' })
    expect(await clientStore.has(hash)).toBe(false)
    expect(clientTempFiles()).toEqual([])
  })

  it('rejects a short body and an oversized one', async () => {
    const good = randomBytes(100_000)
    const hash = sha256(good)
    lie = (stream) => { stream.send(encodeFrame({ ok: true, size: good.byteLength })); stream.send(good.subarray(0, 50_000)) }
    await expect(fetchBlob(toLiar, hash, clientStore)).rejects.toMatchObject({ name: 'BlobIntegrityError' })
    lie = (stream) => { stream.send(encodeFrame({ ok: true, size: good.byteLength })); stream.send(Buffer.concat([good, good])) }
    await expect(fetchBlob(toLiar, hash, clientStore)).rejects.toMatchObject({ name: expect.stringMatching(/BlobIntegrityError|TransferTooLargeError/) })
    lie = (stream) => { stream.send(encodeFrame({ ok: true, size: 9 * 1024 ** 3 })) }
    await expect(fetchBlob(toLiar, hash, clientStore)).rejects.toMatchObject({ name: 'TransferTooLargeError' })
    expect(await clientStore.has(hash)).toBe(false)
    expect(clientTempFiles()).toEqual([])
  })

  it('gives up on a peer that stops sending', async () => {
    const good = randomBytes(100_000)
    const hash = sha256(good)
    lie = (stream) => { stream.send(encodeFrame({ ok: true, size: good.byteLength })); stream.send(good.subarray(0, 10)) }
    // the liar's handler half-closes, so hold the write side open by never finishing: send, then wait
    await liar.unhandle(BLOB_PROTOCOL)
    await liar.handle(BLOB_PROTOCOL, async (stream) => {
      await lpStream(stream).read()
      lie(stream, '')
      await new Promise(resolve => setTimeout(resolve, 3_000))
      stream.abort(new Error('done'))
    })
    await expect(fetchBlob(toLiar, hash, clientStore, { stallMs: 300 })).rejects.toMatchObject({ name: 'TransferStalledError' })
    expect(clientTempFiles()).toEqual([])
  })
})

describe('/farmesh/output/1.0.0', () => {
  const header = (over: Partial<OutputHeader>, bytes: Buffer): OutputHeader => ({
    jobId: 'job-0001', frame: 1, name: 'frame_0001.png', size: bytes.byteLength, hash: sha256(bytes), attempt: 'a1', host: 'renderer-1', ...over
  })
  const outDir = (): string => join(tmp, 'outputs')

  it('stores the first push and answers stored:false to the second', async () => {
    decide = (h) => ({ dest: join(outDir(), h.jobId, h.name) })
    const bytes = randomBytes(5 * 1024 * 1024)
    const file = join(tmp, 'frame.png')
    writeFileSync(file, bytes)
    const h = header({}, bytes)
    expect(await pushOutput(toServer, h, file, { signal: AbortSignal.timeout(20_000) })).toEqual({ stored: true })
    expect(await pushOutput(toServer, { ...h, attempt: 'a2' }, file, { signal: AbortSignal.timeout(20_000) })).toEqual({ stored: false })
    expect(readFileSync(join(outDir(), h.jobId, h.name)).equals(bytes)).toBe(true)
    expect(outcomes.slice(-2).map(o => o.status)).toEqual(['stored', 'duplicate'])
    expect(readdirSync(join(outDir(), h.jobId))).toEqual([h.name]) // no temp files
  })

  it('answers a known duplicate early, without taking the whole file', async () => {
    decide = () => ({ duplicate: true })
    const bytes = randomBytes(32 * 1024 * 1024)
    const file = join(tmp, 'big.exr')
    writeFileSync(file, bytes)
    let sent = 0
    const res = await pushOutput(toServer, header({ name: 'big.exr' }, bytes), file, { signal: AbortSignal.timeout(20_000), onProgress: (n) => { sent = n } })
    expect(res).toEqual({ stored: false })
    expect(sent).toBeLessThan(bytes.byteLength)
  })

  it('refuses an unknown job', async () => {
    decide = (h) => ({ refuse: `unknown job ${h.jobId}` })
    const bytes = randomBytes(1000)
    const file = join(tmp, 'small.png')
    writeFileSync(file, bytes)
    await expect(pushOutput(toServer, header({ jobId: 'nope-1234' }, bytes), file))
      .rejects.toMatchObject({ name: 'OutputRefusedError', reason: 'unknown job nope-1234' })
  })

  it('refuses a name that is not a plain file name', async () => {
    decide = (h) => ({ dest: join(outDir(), h.jobId, h.name) })
    const bytes = randomBytes(1000)
    const file = join(tmp, 'x')
    writeFileSync(file, bytes)
    // our own client will not even send it
    await expect(pushOutput(toServer, header({ name: '../x' }, bytes), file)).rejects.toMatchObject({ name: 'ProtocolError' })
    // a client that does gets a refusal, and nothing is written
    for (const name of ['../x', '..', 'a/b']) {
      const stream = await client.dialProtocol(server.getMultiaddrs()[0], OUTPUT_PROTOCOL)
      const js = new JsonStream(stream, { maxBytes: 1024, timeoutMs: 5_000 })
      stream.send(encodeFrame(header({ name }, bytes)))
      stream.send(bytes)
      await stream.close()
      const reply = await js.read(parseOutputReply, AbortSignal.timeout(5_000))
      expect(reply).toMatchObject({ ok: false, reason: expect.stringContaining('name') })
    }
    expect(existsSync(join(outDir(), 'x'))).toBe(false)
  })

  it('refuses bytes that do not match the announced hash, and keeps nothing', async () => {
    decide = (h) => ({ dest: join(outDir(), h.jobId, h.name) })
    const bytes = randomBytes(200_000)
    const file = join(tmp, 'liar.png')
    writeFileSync(file, bytes)
    await expect(pushOutput(toServer, header({ name: 'liar.png', hash: sha256(randomBytes(4)) }, bytes), file))
      .rejects.toMatchObject({ name: 'OutputRefusedError', reason: expect.stringContaining('hash') })
    expect(readdirSync(join(outDir(), 'job-0001')).filter(n => n.includes('liar'))).toEqual([])
  })
})

describe('FramedReceiver', () => {
  it('parses a header split byte by byte and keeps every body byte after it', async () => {
    const [out, inn] = await streamPair()
    const rx = new FramedReceiver(inn)
    const body = randomBytes(300_000)
    const wire = Buffer.concat([encodeFrame({ hello: 'world' }), body])
    // header and body arrive in odd pieces, the first of which straddles the boundary
    for (let i = 0; i < 20; i++) out.send(wire.subarray(i, i + 1))
    for (let i = 20; i < wire.length; i += 7777) out.send(wire.subarray(i, i + 7777))
    await out.close()
    const header = await rx.readHeader(AbortSignal.timeout(5_000))
    expect(JSON.parse(Buffer.from(header).toString())).toEqual({ hello: 'world' })
    const got: Buffer[] = []
    const sink = new Writable({ highWaterMark: 16 * 1024, write (c, _e, cb) { got.push(c); setTimeout(cb, 1) } })
    expect(await rx.body(sink, { maxBytes: body.byteLength })).toBe(body.byteLength)
    expect(Buffer.concat(got).equals(body)).toBe(true)
  })

  it('keeps a paused stream paused when the sink fills up during resume() (no read-buffer overflow on a slow sink)', async () => {
    // Regression: a pause made inside the 'message' dispatch that resume() performs was undone by
    // resume()'s own sendResume() at the yamux level, so the window kept opening while the stream
    // said 'paused', and the 4 MiB read buffer overflowed ("Read buffer length … exceeded limit …
    // read status is paused"). A slow sink pauses and resumes the stream thousands of times here.
    const proto = '/farmesh-test/framed-slow-sink/1.0.0'
    const size = 48 * 1024 * 1024
    const data = randomBytes(size)
    type Got = { count: number, hash: string, writes: number }
    let resolve!: (v: Got) => void
    let reject!: (e: unknown) => void
    const received = new Promise<Got>((res, rej) => { resolve = res; reject = rej })
    received.catch(() => {})
    await server.handle(proto, async (stream) => {
      try {
        const rx = new FramedReceiver(stream)
        const header = JSON.parse(Buffer.from(await rx.readHeader(AbortSignal.timeout(5_000))).toString())
        const h = createHash('sha256')
        let writes = 0
        const sink = new Writable({
          highWaterMark: 16 * 1024,
          write (chunk: Buffer, _enc, cb) {
            h.update(chunk)
            // slower than the loopback link, so the stream keeps filling up and pausing
            if (++writes % 4 === 0) setTimeout(cb, 1)
            else setImmediate(cb)
          }
        })
        const count = await rx.body(sink, { maxBytes: header.size, stallMs: 5_000 })
        resolve({ count, hash: h.digest('hex'), writes })
      } catch (err) {
        reject(err)
        stream.abort(err as Error)
      }
    })
    try {
      const stream = await toServer.newStream(proto, { signal: AbortSignal.timeout(5_000) })
      const sending = (async () => {
        stream.send(encodeFrame({ size }))
        const sent = await sendAll(stream, pieces(data, 64 * 1024), { stallMs: 5_000 })
        await stream.close({ signal: AbortSignal.timeout(5_000) })
        return sent
      })()
      const [tx, rx] = await Promise.allSettled([sending, received])
      if (rx.status === 'rejected') throw rx.reason // the receiver's error says most (e.g. the read buffer overflow)
      expect(tx).toEqual({ status: 'fulfilled', value: size })
      expect(rx.value.count).toBe(size)
      expect(rx.value.hash).toBe(sha256(data))
      expect(rx.value.writes).toBeGreaterThan(100) // the sink really was slow, chunk by chunk
    } finally {
      await server.unhandle(proto)
    }
  }, 20_000)
})

async function * pieces (buf: Buffer, size: number): AsyncGenerator<Uint8Array> {
  for (let i = 0; i < buf.byteLength; i += size) yield buf.subarray(i, i + size)
}
