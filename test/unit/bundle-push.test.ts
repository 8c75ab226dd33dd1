import '../../node/polyfill.js'
import { createHash, randomBytes } from 'node:crypto'
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { generateKeyPair } from '@libp2p/crypto/keys'
import type { Connection, Libp2p } from '@libp2p/interface'
import { createHost } from '../../node/libp2p-host.js'
import { BUNDLE_PROTOCOL, BundleReceiver, ByteChannel, probeBundle, pushBundle, type BundleHeader } from '../../protocols/bundle-push.js'
import {
  BundleError, newBundleNonce, newStreamParams, packBundle, unpackBundle,
  type BundleInputFile, type UnpackedBundle, type UnpackOptions
} from '../../storage/bundle.js'
import { baseOptions as sharedOptions, inputFile, origin, remote, sha256, unpackOptions } from './bundle-fixtures.js'

/** fixed stream parameters: the same options give the same bytes, so a push can resume */
function baseOptions (files: BundleInputFile[], over: Partial<Parameters<typeof packBundle>[0]> = {}): Parameters<typeof packBundle>[0] {
  return sharedOptions(files, { params: newStreamParams(), ...over })
}

const MiB = 1024 * 1024


async function node (): Promise<Libp2p> {
  return await createHost({ privateKey: await generateKeyPair('Ed25519'), listen: ['/ip4/127.0.0.1/tcp/0'], isRefused: () => false }) as unknown as Libp2p
}

let root: string
let sender: Libp2p | undefined
let receiver: Libp2p | undefined
let conn: Connection

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), 'farmesh-bundle-push-'))
  ;[sender, receiver] = await Promise.all([node(), node()])
  conn = await sender.dial(receiver.getMultiaddrs()[0])
}, 30_000)

afterAll(async () => {
  await Promise.all([sender, receiver].map(async n => await n?.stop()))
  rmSync(root, { recursive: true, force: true })
})

afterEach(async () => {
  await receiver?.unhandle(BUNDLE_PROTOCOL)
})

// ---------------------------------------------------------------- helpers (as in bundle.test.ts)




async function collect (src: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const parts: Buffer[] = []
  for await (const c of src) parts.push(Buffer.from(c))
  return Buffer.concat(parts)
}

async function * pieces (buf: Buffer, size = 64 * 1024): AsyncGenerator<Uint8Array> {
  for (let i = 0; i < buf.byteLength; i += size) yield buf.subarray(i, i + size)
}

/** 'done' if `p` settles within `ms`, else 'pending'. */
async function within (p: Promise<unknown>, ms: number): Promise<'done' | 'pending'> {
  let timer: NodeJS.Timeout | undefined
  const r = await Promise.race([
    p.then(() => 'done' as const, () => 'done' as const),
    new Promise<'pending'>(resolve => { timer = setTimeout(() => { resolve('pending') }, ms) })
  ])
  clearTimeout(timer)
  return r
}

interface Site {
  /** the case's own directory: inputs under src/, part files under parts/, the intake's temp dir under intake/ */
  dir: string
  intakeDir: string
  partFile: (h: Pick<BundleHeader, 'jobId' | 'nonce'>) => string
  /** what the intake unpacked, one per accepted bundle */
  unpacked: UnpackedBundle[]
  /** what the intake threw */
  refusals: unknown[]
  /** handle() calls that have returned */
  handled: number
}

/** The receiving site: a BundleReceiver on BUNDLE_PROTOCOL whose intake unpacks the bundle as it arrives. */
async function serve (over: Partial<UnpackOptions> = {}): Promise<Site> {
  const dir = mkdtempSync(join(root, 'case-'))
  mkdirSync(join(dir, 'parts'))
  const site: Site = {
    dir,
    intakeDir: join(dir, 'intake'),
    partFile: (h) => join(dir, 'parts', `${h.jobId}.${h.nonce}.part`),
    unpacked: [],
    refusals: [],
    handled: 0
  }
  const rx = new BundleReceiver({ isTruncation: (err) => err instanceof BundleError && err.reason === 'truncated' })
  await receiver!.handle(BUNDLE_PROTOCOL, async (stream) => {
    try {
      await rx.handle(stream, {
        partPath: async (h) => site.partFile(h),
        take: async (h, source) => {
          try {
            const out = await unpackBundle(source, unpackOptions(site.intakeDir, over))
            site.unpacked.push(out)
            return { accepted: true, remoteJobId: `remote-${h.jobId}` }
          } catch (err) {
            site.refusals.push(err)
            throw err
          }
        }
      })
    } finally {
      site.handled++
    }
  })
  return site
}

/** The unpacked files, by path, with their contents. */
function contents (out: UnpackedBundle): Record<string, string> {
  return Object.fromEntries(out.files.map(f => [f.path, sha256(readFileSync(f.tempPath))]))
}

function expected (inputs: BundleInputFile[]): Record<string, string> {
  return Object.fromEntries(inputs.map(f => [f.path, sha256(readFileSync(f.source!))]))
}

async function waitFor (cond: () => boolean, ms = 5_000): Promise<void> {
  const until = Date.now() + ms
  while (!cond()) {
    if (Date.now() > until) throw new Error('timed out waiting')
    await new Promise(resolve => setTimeout(resolve, 10))
  }
}

// ---------------------------------------------------------------- the protocol

describe('/farmesh/bundle/1.1.0', () => {
  it('accepts a whole bundle: the intake unpacks exactly the inputs, and no part file is left', async () => {
    const site = await serve()
    const inputs = [
      inputFile(site.dir, 'scene.pov', Buffer.from('#include "tex/wood.inc"\n')),
      inputFile(site.dir, 'tex/wood.png', randomBytes(3 * MiB + 12345)),
      inputFile(site.dir, 'tex/sky.hdr', randomBytes(1 * MiB))
    ]
    const opts = baseOptions(inputs)
    const header = { jobId: opts.jobId, nonce: opts.nonce, offset: 0 }
    let sent = 0
    const reply = await pushBundle(conn, header, packBundle(opts), { signal: AbortSignal.timeout(30_000), onProgress: (n) => { sent = n } })

    expect(reply).toEqual({ ok: true, accepted: true, remoteJobId: 'remote-j1' })
    expect(sent).toBe((await collect(packBundle(opts))).byteLength)
    expect(site.unpacked).toHaveLength(1)
    expect(site.unpacked[0].manifest.nonce).toBe(opts.nonce)
    expect(contents(site.unpacked[0])).toEqual(expected(inputs))
    expect(existsSync(site.partFile(header))).toBe(false)
  }, 30_000)

  it('resumes an interrupted push from where the receiver stopped', async () => {
    const site = await serve()
    const inputs = [
      inputFile(site.dir, 'scene.pov', Buffer.from('camera { location <0, 2, -3> }\n')),
      inputFile(site.dir, 'tex/a.exr', randomBytes(2 * MiB)),
      inputFile(site.dir, 'tex/b.exr', randomBytes(2 * MiB + 777))
    ]
    const opts = baseOptions(inputs)
    const full = await collect(packBundle(opts))
    const id = { jobId: opts.jobId, nonce: opts.nonce }
    const cut = Math.floor(full.byteLength / 2) + 1001 // mid-frame

    // the first attempt ends after half the bytes (the sender half-closes as if its source ran dry)
    const first = await pushBundle(conn, { ...id, offset: 0 }, pieces(full.subarray(0, cut)), { signal: AbortSignal.timeout(30_000) })
    expect(first).toMatchObject({ ok: false, resumeAt: cut, reason: expect.stringContaining('incomplete') })
    expect(site.unpacked).toHaveLength(0)
    expect((site.refusals[0] as BundleError).reason).toBe('truncated')
    expect(statSync(site.partFile(id)).size).toBe(cut)
    expect(readFileSync(site.partFile(id)).equals(full.subarray(0, cut))).toBe(true)

    // a sender that lost track of its offset (a restart) asks for it
    const at = await probeBundle(conn, id, AbortSignal.timeout(10_000))
    expect(at).toBe(cut)

    // a push from the wrong offset is not taken; the reply says where to resume
    const wrong = await pushBundle(conn, { ...id, offset: 0 }, pieces(full), { signal: AbortSignal.timeout(30_000) })
    expect(wrong).toMatchObject({ ok: false, resumeAt: cut })
    expect(statSync(site.partFile(id)).size).toBe(cut)

    // the same options regenerate the same bytes from `at`: only the rest is sent
    let sent = 0
    const second = await pushBundle(conn, { ...id, offset: at }, packBundle({ ...opts, offset: at }), { signal: AbortSignal.timeout(30_000), onProgress: (n) => { sent = n } })
    expect(second).toEqual({ ok: true, accepted: true, remoteJobId: 'remote-j1' })
    expect(sent).toBe(full.byteLength - at)
    expect(site.unpacked).toHaveLength(1)
    expect(contents(site.unpacked[0])).toEqual(expected(inputs))
    expect(existsSync(site.partFile(id))).toBe(false)
  }, 30_000)

  it('refuses early from the manifest: the sender stops long before the end, and nothing is kept', async () => {
    const site = await serve({ onManifest: () => { throw new BundleError('refused', 'no room for 32 MiB of inputs') } })
    const inputs = [inputFile(site.dir, 'huge.bin', randomBytes(32 * MiB))]
    const opts = baseOptions(inputs)
    const header = { jobId: opts.jobId, nonce: opts.nonce, offset: 0 }
    let sent = 0
    const t0 = Date.now()
    const reply = await pushBundle(conn, header, packBundle(opts), { signal: AbortSignal.timeout(30_000), onProgress: (n) => { sent = n } })
    const ms = Date.now() - t0

    expect(reply).toMatchObject({ ok: true, accepted: false, reason: expect.stringMatching(/refused.*no room/) })
    expect(sent).toBeGreaterThan(0)
    expect(sent).toBeLessThan(16 * MiB) // the bundle is > 32 MiB
    expect(ms).toBeLessThan(10_000)
    expect(site.unpacked).toHaveLength(0)
    expect(existsSync(site.partFile(header))).toBe(false)
    await waitFor(() => site.handled === 1) // the receiver has let the rest of the stream run out
    expect(existsSync(site.partFile(header))).toBe(false)
    expect(readdirSync(site.intakeDir)).toEqual([]) // unpackBundle removed its directory
  }, 30_000)

  it('refuses a bundle whose ciphertext was tampered with, and keeps no part file', async () => {
    const site = await serve()
    const inputs = [inputFile(site.dir, 'scene.pov', Buffer.from('sphere { 0, 1 }\n')), inputFile(site.dir, 'data.bin', randomBytes(2 * MiB))]
    const opts = baseOptions(inputs)
    const bad = await collect(packBundle(opts))
    bad[bad.byteLength - 40] ^= 0x01 // inside the last frame
    const header = { jobId: opts.jobId, nonce: opts.nonce, offset: 0 }
    const reply = await pushBundle(conn, header, pieces(bad), { signal: AbortSignal.timeout(30_000) })

    expect(reply).toMatchObject({ ok: true, accepted: false, reason: expect.stringMatching(/decrypt-failed/) })
    expect(site.unpacked).toHaveLength(0)
    expect((site.refusals[0] as BundleError).reason).toBe('decrypt-failed')
    expect(existsSync(site.partFile(header))).toBe(false)
    // not resumable: a probe finds nothing held
    expect(await probeBundle(conn, { jobId: header.jobId, nonce: header.nonce }, AbortSignal.timeout(10_000))).toBe(0)
  }, 30_000)

  it('resets a push whose header is malformed at once, also when the sender has already finished', async () => {
    await serve()
    const t0 = Date.now()
    // an offset beyond any bundle: refused before a part file is named
    const err = await pushBundle(conn, { jobId: 'j1', nonce: newBundleNonce(), offset: 65 * 1024 ** 3 }, (async function * () { yield Buffer.from('x') })(), { signal: AbortSignal.timeout(20_000) }).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(Error)
    expect((err as Error).name).not.toBe('TimeoutError')
    expect(Date.now() - t0).toBeLessThan(5_000)
  })
})

// ---------------------------------------------------------------- ByteChannel

describe('ByteChannel', () => {
  const L = 1000

  it('holds a writer back while `limit` bytes are queued, and hands every byte over in order', async () => {
    const ch = new ByteChannel(L)
    const a = Buffer.alloc(L / 2, 1)
    const b = Buffer.alloc(L / 2, 2)
    const c = Buffer.alloc(L / 2, 3)
    expect(await within(ch.push([a]), 50)).toBe('done')
    expect(await within(ch.push([b]), 50)).toBe('done')
    const third = ch.push([c]) // L bytes queued and nobody reading: waits
    expect(await within(third, 100)).toBe('pending')

    const it = ch[Symbol.asyncIterator]()
    expect((await it.next()).value).toEqual(a)
    expect(await within(third, 1_000)).toBe('done') // room again
    ch.end()
    const rest: Buffer[] = []
    for (let r = await it.next(); r.done !== true; r = await it.next()) rest.push(r.value)
    expect(Buffer.concat(rest)).toEqual(Buffer.concat([b, c]))
  })

  it('does not leave a writer blocked when the reader stops early', async () => {
    const ch = new ByteChannel(L)
    await ch.push([Buffer.alloc(L, 1)])
    const seen: Buffer[] = []
    let blocked: Promise<void> | undefined
    for await (const buf of ch) {
      seen.push(buf)
      // while the reader works on this chunk the writer fills the channel again, and waits
      await ch.push([Buffer.alloc(L, 2)])
      blocked = ch.push([Buffer.alloc(L, 3)])
      expect(await within(blocked, 100)).toBe('pending')
      break // a reader that has decided (a refusal) and reads no more
    }
    expect(seen).toEqual([Buffer.alloc(L, 1)])
    expect(await within(blocked!, 1_000)).toBe('done')
    // and later pushes are dropped, not parked forever
    for (let i = 0; i < 5; i++) expect(await within(ch.push([Buffer.alloc(L, 4)]), 1_000)).toBe('done')
  })

  it('passes a writer-side failure to the reader and releases a blocked writer', async () => {
    const ch = new ByteChannel(L)
    await ch.push([Buffer.alloc(L)])
    const blocked = ch.push([Buffer.alloc(L)])
    expect(await within(blocked, 100)).toBe('pending')
    ch.fail(new Error('stream reset'))
    expect(await within(blocked, 1_000)).toBe('done')
    await expect(collect(ch)).rejects.toThrow('stream reset')
  })
})
