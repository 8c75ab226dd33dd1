import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createHash, randomBytes } from 'node:crypto'
import { createReadStream, createWriteStream, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { once } from 'node:events'
import { tmpdir } from 'node:os'
import { join, relative } from 'node:path'
import {
  BundleError, DEFAULT_CHUNK_SIZE, decryptStream, encodeManifest, encryptStream, encryptedSize, exportStreamParams, importStreamParams,
  newBundleNonce, newStreamParams, packBundle, signManifest, unpackBundle,
  type BundleInputFile, type BundleManifest, type ManifestFile, type UnpackOptions
} from '../../storage/bundle.js'
import {
  createInvite, exportSiteKeys, generateSiteKeys, importSiteKeys, InviteError, loadOrCreateSiteKeys, loadSiteKeys, parseInvite,
  parseSiteCard, publicSiteCard, saveSiteKeys, siteId, SiteKeysError
} from '../../storage/site-keys.js'
import { PendingInvites } from '../../storage/invites.js'
import { OriginStore, OriginStoreError } from '../../storage/origin-store.js'
import { baseOptions, inputFile, origin, remote, sha256, unpackOptions } from './bundle-fixtures.js'

const other = generateSiteKeys('other studio')

let root: string
beforeAll(() => { root = mkdtempSync(join(tmpdir(), 'farmesh-bundle-')) })
afterAll(() => { rmSync(root, { recursive: true, force: true }) })

// ---------------------------------------------------------------- helpers



async function collect (src: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const parts: Buffer[] = []
  for await (const c of src) parts.push(Buffer.from(c))
  return Buffer.concat(parts)
}

/** Replays bytes in pieces of a given size: the reader must not care how the network cut them. */
async function * pieces (buf: Buffer, size = 4096): AsyncGenerator<Uint8Array> {
  for (let i = 0; i < buf.byteLength; i += size) yield buf.subarray(i, i + size)
}

/** Every file under `dir`, relative. */
function files (dir: string): string[] {
  const out: string[] = []
  const walk = (d: string): void => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name)
      if (e.isDirectory()) walk(p)
      else out.push(relative(dir, p))
    }
  }
  if (existsSync(dir)) walk(dir)
  return out.sort()
}

/** A fresh area: `intake/` for the reader, and `outside/sentinel` that must stay the only other file. */
function area (): { dir: string, tempDir: string } {
  const dir = mkdtempSync(join(root, 'case-'))
  mkdirSync(join(dir, 'outside'))
  writeFileSync(join(dir, 'outside', 'sentinel'), 'untouched')
  return { dir, tempDir: join(dir, 'intake') }
}



const escapeName = `farmesh-escape-${randomBytes(4).toString('hex')}`

/** Refused with `reason`, and nothing left behind: no file in the intake, nothing new anywhere else. */
async function expectRefused (bytes: Buffer | AsyncIterable<Uint8Array>, reason: string, over: Partial<UnpackOptions> = {}): Promise<BundleError> {
  const { dir, tempDir } = area()
  const src = Buffer.isBuffer(bytes) ? pieces(bytes, 1000) : bytes
  const err = await unpackBundle(src, unpackOptions(tempDir, over)).then(() => undefined, (e: unknown) => e)
  expect(err).toBeInstanceOf(BundleError)
  expect((err as BundleError).name).toBe('BundleError')
  expect((err as BundleError).reason, (err as Error).message).toBe(reason)
  expect(files(dir)).toEqual(['outside/sentinel'])
  expect(readFileSync(join(dir, 'outside', 'sentinel'), 'utf8')).toBe('untouched')
  for (const p of [join(root, escapeName), join(dir, escapeName), join('/etc', escapeName), join('/tmp', escapeName)]) expect(existsSync(p)).toBe(false)
  return err as BundleError
}

// ---- hand-made tars inside a valid envelope, for what packBundle would never write

function tarHeader (name: string, opts: { size?: number, type?: string, linkname?: string } = {}): Buffer {
  const b = Buffer.alloc(512)
  b.write(name, 0, 100, 'utf8')
  b.write('0000644\0', 100)
  b.write('0000000\0', 108)
  b.write('0000000\0', 116)
  b.write((opts.size ?? 0).toString(8).padStart(11, '0') + '\0', 124)
  b.write('00000000000\0', 136)
  b.write('        ', 148)
  b.write(opts.type ?? '0', 156)
  b.write(opts.linkname ?? '', 157, 100, 'utf8')
  b.write('ustar\0', 257)
  b.write('00', 263)
  let sum = 0
  for (const x of b) sum += x
  b.write(sum.toString(8).padStart(6, '0') + '\0 ', 148)
  return b
}

function tarEntry (name: string, data: Buffer = Buffer.alloc(0), opts: { type?: string, linkname?: string, size?: number } = {}): Buffer {
  const pad = (512 - (data.byteLength % 512)) % 512
  return Buffer.concat([tarHeader(name, { size: opts.size ?? data.byteLength, type: opts.type, linkname: opts.linkname }), data, Buffer.alloc(pad)])
}

const TAR_END = Buffer.alloc(1024)

function manifestOf (files: ManifestFile[], over: Partial<BundleManifest> = {}): BundleManifest {
  return {
    v: 1, jobId: 'j1', originSiteId: origin.siteId, recipientSiteId: remote.siteId, createdAt: Date.now(), nonce: newBundleNonce(), job: { name: 'x' }, files, ...over
  }
}

function signedHead (m: BundleManifest, signer = origin.signPrivate): Buffer {
  const bytes = encodeManifest(m)
  return Buffer.concat([tarEntry('manifest.json', bytes), tarEntry('manifest.sig', signManifest(bytes, signer))])
}

async function seal (tar: Buffer, to = remote, headerSite = to.siteId): Promise<Buffer> {
  return await collect(encryptStream(pieces(tar, 3000), { recipientEncPub: to.encPublic, recipientSiteId: headerSite }))
}

const A = Buffer.from('alpha contents\n')
const fileA = (over: Partial<ManifestFile> = {}): ManifestFile => ({ path: 'a.txt', hash: sha256(A), size: A.byteLength, included: true, ...over })

// ---------------------------------------------------------------- round trip

describe('bundle round trip', () => {
  it('packs and unpacks a job with its files, deduplicating by content', async () => {
    const { dir, tempDir } = area()
    const wood = randomBytes(200_000)
    const inputs = [
      inputFile(dir, 'scene.pov', Buffer.from('#include "tex/wood.inc"\n'), '/mnt/projects/show/scene.pov'),
      inputFile(dir, 'tex/wood.png', wood, '/mnt/projects/show/tex/wood.png'),
      inputFile(dir, 'tex/wood-copy.png', wood), // same content: sent once
      inputFile(dir, 'empty.txt', Buffer.alloc(0)),
      { path: 'held/sky.hdr', hash: sha256(Buffer.from('sky')), size: 3 } // the remote has it: no source
    ]
    const opts = baseOptions(inputs)
    const bytes = await collect(packBundle(opts))
    const out = await unpackBundle(pieces(bytes, 777), unpackOptions(tempDir))

    expect(out.manifest.jobId).toBe('j1')
    expect(out.manifest.originSiteId).toBe(origin.siteId)
    expect(out.manifest.recipientSiteId).toBe(remote.siteId)
    expect(out.manifest.job).toEqual(opts.job)
    expect(out.manifest.files.map(f => [f.path, f.included, f.original])).toEqual([
      ['scene.pov', true, '/mnt/projects/show/scene.pov'],
      ['tex/wood.png', true, '/mnt/projects/show/tex/wood.png'],
      ['tex/wood-copy.png', false, undefined],
      ['empty.txt', true, undefined],
      ['held/sky.hdr', false, undefined]
    ])
    expect(out.files.map(f => f.path)).toEqual(['scene.pov', 'tex/wood.png', 'empty.txt'])
    for (const f of out.files) {
      expect(f.tempPath.startsWith(out.dir + '/')).toBe(true)
      expect(sha256(readFileSync(f.tempPath))).toBe(f.hash)
    }
    expect(readFileSync(out.files[1].tempPath).equals(wood)).toBe(true)
    // only the intake directory was written to
    expect(files(dir).filter(f => !f.startsWith('src/') && !f.startsWith('intake/'))).toEqual(['outside/sentinel'])
  })

  it('has the size encryptedSize predicts and survives any chunking of the stream', async () => {
    const { dir, tempDir } = area()
    const data = randomBytes(3 * DEFAULT_CHUNK_SIZE) // plaintext crosses several chunk boundaries
    const bytes = await collect(packBundle(baseOptions([inputFile(dir, 'big.bin', data)])))
    const plain = await collect(decryptStream(pieces(bytes), { recipientEncPriv: remote.encPrivate, recipientSiteId: remote.siteId }))
    expect(bytes.byteLength).toBe(encryptedSize(plain.byteLength, remote.siteId))
    const out = await unpackBundle(pieces(bytes, 1), unpackOptions(tempDir))
    expect(readFileSync(out.files[0].tempPath).equals(data)).toBe(true)
  })

  it('flags the last chunk even when the plaintext is a whole number of chunks', async () => {
    for (const n of [0, 1, DEFAULT_CHUNK_SIZE - 1, DEFAULT_CHUNK_SIZE, 2 * DEFAULT_CHUNK_SIZE, 2 * DEFAULT_CHUNK_SIZE + 1]) {
      const plain = randomBytes(n)
      const ct = await collect(encryptStream(pieces(plain, 5000), { recipientEncPub: remote.encPublic, recipientSiteId: remote.siteId }))
      expect(ct.byteLength).toBe(encryptedSize(n, remote.siteId))
      const back = await collect(decryptStream(pieces(ct, 999), { recipientEncPriv: remote.encPrivate, recipientSiteId: remote.siteId }))
      expect(back.equals(plain)).toBe(true)
    }
  })

  it('refuses to pack an unsafe path and reports a source file that changed', async () => {
    const { dir } = area()
    expect(() => packBundle(baseOptions([{ ...inputFile(dir, 'x', A), path: '../x' }]))).toThrow(BundleError)
    expect(() => packBundle(baseOptions([{ ...inputFile(dir, 'x', A), original: 'relative/x' }]))).toThrow(/bad-path/)
    const f = inputFile(dir, 'changing.txt', A)
    writeFileSync(f.source!, Buffer.from('ALPHA contents\n'))
    const err = await collect(packBundle(baseOptions([f]))).catch((e: unknown) => e)
    expect((err as BundleError).reason).toBe('source-changed')
  })
})

// ---------------------------------------------------------------- resume

describe('bundle resume', () => {
  it('regenerates a byte-identical stream from any offset', async () => {
    const { dir, tempDir } = area()
    // several chunks, so offsets inside the third frame exist
    const inputs = [inputFile(dir, 'scene.pov', randomBytes(1000)), inputFile(dir, 'tex/a.png', randomBytes(4 * DEFAULT_CHUNK_SIZE))]
    const params = newStreamParams()
    const opts = baseOptions(inputs, { params })
    const full = await collect(packBundle(opts))
    const again = await collect(packBundle({ ...opts }))
    expect(again.equals(full)).toBe(true)

    const frame = DEFAULT_CHUNK_SIZE + 21
    const headerLen = encryptedSize(0, remote.siteId) - 21 // an empty plaintext is the header and one 21-byte frame
    const offsets = [0, 1, headerLen - 1, headerLen, headerLen + 1, headerLen + frame, headerLen + frame + 7, headerLen + 3 * frame - 1,
      full.byteLength - 1, full.byteLength, ...Array.from({ length: 5 }, () => Math.floor(Math.random() * full.byteLength))]
    for (const offset of offsets) {
      const tail = await collect(packBundle({ ...opts, offset }))
      expect(tail.equals(full.subarray(offset)), `offset ${offset}`).toBe(true)
    }

    // the receiver had N bytes, the sender resumed: together they unpack
    const n = headerLen + 2 * frame + 12345
    const resumed = Buffer.concat([full.subarray(0, n), await collect(packBundle({ ...opts, offset: n }))])
    const out = await unpackBundle(pieces(resumed, 65536), unpackOptions(tempDir))
    expect(out.files.map(f => f.path)).toEqual(['scene.pov', 'tex/a.png'])

    // parameters survive a restart of the sender
    const restored = importStreamParams(exportStreamParams(params))
    expect((await collect(packBundle({ ...opts, params: restored, offset: 100 }))).equals(full.subarray(100))).toBe(true)

    const beyond = await collect(packBundle({ ...opts, offset: full.byteLength + 1 })).catch((e: unknown) => e)
    expect((beyond as BundleError).reason).toBe('bad-offset')
    expect(() => packBundle({ ...opts, params: undefined, offset: 10 })).toThrow(RangeError)
  })
})

// ---------------------------------------------------------------- memory and throughput

describe('bundle memory', () => {
  it('decrypts and unpacks a 64 MiB bundle with flat memory', async () => {
    const { dir, tempDir } = area()
    const size = 64 * 1024 * 1024
    const source = join(dir, 'big.bin')
    const hash = createHash('sha256')
    const ws = createWriteStream(source)
    for (let i = 0; i < size / (1 << 20); i++) {
      const b = randomBytes(1 << 20)
      hash.update(b)
      if (!ws.write(b)) await once(ws, 'drain')
    }
    ws.end()
    await once(ws, 'finish')
    const cipherFile = join(dir, 'bundle.fmb')
    const packed = createWriteStream(cipherFile)
    for await (const c of packBundle(baseOptions([{ path: 'big.bin', hash: hash.digest('hex'), size, source }]))) {
      if (!packed.write(c)) await once(packed, 'drain')
    }
    packed.end()
    await once(packed, 'finish')

    const baseline = process.memoryUsage().rss
    let peak = baseline
    const sampler = setInterval(() => { peak = Math.max(peak, process.memoryUsage().rss) }, 5)
    const t0 = process.hrtime.bigint()
    const out = await unpackBundle(createReadStream(cipherFile, { highWaterMark: 256 * 1024 }), unpackOptions(tempDir))
    const seconds = Number(process.hrtime.bigint() - t0) / 1e9
    clearInterval(sampler)
    peak = Math.max(peak, process.memoryUsage().rss)
    const growth = peak - baseline
    console.log(`unpack 64 MiB: ${(size / 2 ** 20 / seconds).toFixed(0)} MiB/s (${seconds.toFixed(2)} s), rss growth ${(growth / 2 ** 20).toFixed(1)} MiB`)
    expect(statSync(out.files[0].tempPath).size).toBe(size)
    // a reader holding the bundle would grow by >= 64 MiB
    expect(growth).toBeLessThan(40 * 2 ** 20)
  })
})

// ---------------------------------------------------------------- refusals

describe('bundle refusals', () => {
  async function validBundle (): Promise<Buffer> {
    const { dir } = area()
    const inputs = [inputFile(dir, 'scene.pov', randomBytes(100)), inputFile(dir, 'tex/a.png', randomBytes(3 * DEFAULT_CHUNK_SIZE))]
    return await collect(packBundle(baseOptions(inputs)))
  }

  const headerLen = (): number => encryptedSize(0, remote.siteId) - 21
  const frame = DEFAULT_CHUNK_SIZE + 21

  it('refuses a malformed header', async () => {
    await expectRefused(Buffer.alloc(0), 'malformed-header')
    await expectRefused(randomBytes(5000), 'malformed-header')
    const good = await validBundle()
    const badVersion = Buffer.from(good); badVersion[4] = 9
    await expectRefused(badVersion, 'unsupported-version')
    const badChunk = Buffer.from(good); badChunk.writeUInt32BE(16, 6)
    await expectRefused(badChunk, 'malformed-header')
    const zeroKey = Buffer.from(good); zeroKey.fill(0, 10, 42) // a low-order ephemeral key
    await expectRefused(zeroKey, 'malformed-header')
  })

  it('refuses a truncated stream, wherever it is cut', async () => {
    const good = await validBundle()
    for (const cut of [10, headerLen() + 3, headerLen() + frame, headerLen() + 2 * frame + 100, good.byteLength - 1]) {
      await expectRefused(good.subarray(0, cut), 'truncated')
    }
  })

  it('refuses tampered, reordered and extended streams', async () => {
    const good = await validBundle()
    const flipped = Buffer.from(good); flipped[headerLen() + frame + 1000] ^= 1
    await expectRefused(flipped, 'decrypt-failed')
    const h = headerLen()
    const swapped = Buffer.concat([good.subarray(0, h), good.subarray(h + frame, h + 2 * frame), good.subarray(h, h + frame), good.subarray(h + 2 * frame)])
    await expectRefused(swapped, 'decrypt-failed')
    const salt = Buffer.from(good); salt[50] ^= 1 // header is authenticated too
    await expectRefused(salt, 'decrypt-failed')
    const finalEarly = Buffer.from(good); finalEarly[h] = 1 // claims the first chunk is the last
    await expectRefused(finalEarly, 'decrypt-failed')
    await expectRefused(Buffer.concat([good, Buffer.from('x')]), 'trailing-data')
    const dropped = Buffer.concat([good.subarray(0, h), good.subarray(h + frame)]) // a whole chunk missing
    await expectRefused(dropped, 'decrypt-failed')
  })

  it('refuses a bundle for another site or sealed to another key', async () => {
    const { dir } = area()
    const forOther = await collect(packBundle(baseOptions([inputFile(dir, 'a.txt', A)], { recipientEncPub: other.encPublic, recipientSiteId: other.siteId })))
    await expectRefused(forOther, 'wrong-recipient')
    // our site id in the header, but encrypted to another key
    const tar = Buffer.concat([signedHead(manifestOf([fileA()])), tarEntry('files/a.txt', A), TAR_END])
    await expectRefused(await seal(tar, other, remote.siteId), 'decrypt-failed')
    // signed for another recipient, re-sealed to us (a federated site forwarding someone else's job)
    const forwarded = Buffer.concat([signedHead(manifestOf([fileA()], { recipientSiteId: other.siteId })), tarEntry('files/a.txt', A), TAR_END])
    await expectRefused(await seal(forwarded), 'wrong-recipient')
  })

  it('refuses a wrong signature and an untrusted origin', async () => {
    const files = [fileA()]
    const forged = Buffer.concat([signedHead(manifestOf(files), other.signPrivate), tarEntry('files/a.txt', A), TAR_END])
    await expectRefused(await seal(forged), 'bad-signature')
    const m = manifestOf(files)
    const bytes = encodeManifest(m)
    const sig = signManifest(bytes, origin.signPrivate)
    const altered = Buffer.from(bytes.toString().replace('"x"', '"y"'))
    const tampered = Buffer.concat([tarEntry('manifest.json', altered), tarEntry('manifest.sig', sig), tarEntry('files/a.txt', A), TAR_END])
    await expectRefused(await seal(tampered), 'bad-signature')
    const good = Buffer.concat([signedHead(manifestOf(files)), tarEntry('files/a.txt', A), TAR_END])
    await expectRefused(await seal(good), 'untrusted-origin', { trustedSigners: () => undefined })
    const fromOther = Buffer.concat([signedHead(manifestOf(files, { originSiteId: other.siteId }), other.signPrivate), tarEntry('files/a.txt', A), TAR_END])
    await expectRefused(await seal(fromOther), 'untrusted-origin')
  })

  it('refuses a replayed nonce and a stale bundle', async () => {
    const { dir } = area()
    const bytes = await collect(packBundle(baseOptions([inputFile(dir, 'a.txt', A)])))
    const seen = new Set<string>()
    const seenNonce = (o: string, n: string): boolean => seen.has(`${o}/${n}`)
    const first = await unpackBundle(pieces(bytes), unpackOptions(join(dir, 'intake'), { seenNonce }))
    seen.add(`${first.manifest.originSiteId}/${first.manifest.nonce}`) // the intake records it on accept
    await expectRefused(bytes, 'replayed', { seenNonce })
    const old = await collect(packBundle(baseOptions([inputFile(dir, 'a.txt', A)], { createdAt: Date.now() - 8 * 24 * 3600_000 })))
    await expectRefused(old, 'expired')
    const future = await collect(packBundle(baseOptions([inputFile(dir, 'a.txt', A)], { createdAt: Date.now() + 3600_000 })))
    await expectRefused(future, 'expired')
  })

  it('refuses path traversal, in the manifest or in the tar', async () => {
    for (const path of ['../' + escapeName, '../../' + escapeName, '/etc/' + escapeName, 'a/../../' + escapeName, 'a//b', './a']) {
      const tar = Buffer.concat([signedHead(manifestOf([fileA({ path })])), tarEntry('files/' + path, A), TAR_END])
      await expectRefused(await seal(tar), 'bad-path')
    }
    for (const name of ['files/../../../' + escapeName, '/etc/' + escapeName, 'files//etc/' + escapeName, '../' + escapeName, 'files/a.txt/../../' + escapeName]) {
      const tar = Buffer.concat([signedHead(manifestOf([fileA()])), tarEntry(name, A), TAR_END])
      await expectRefused(await seal(tar), 'bad-path')
    }
    const original = Buffer.concat([signedHead(manifestOf([fileA({ original: '/mnt/../etc/shadow' })])), tarEntry('files/a.txt', A), TAR_END])
    await expectRefused(await seal(original), 'bad-path')
    const collide = Buffer.concat([signedHead(manifestOf([fileA({ path: 'a' }), fileA({ path: 'a/b', hash: sha256(Buffer.from('b')), size: 1 })])), TAR_END])
    await expectRefused(await seal(collide), 'bad-path')
  })

  it('refuses links, devices, fifos and directories', async () => {
    const cases: Array<[string, string]> = [['2', '/etc/passwd'], ['1', 'manifest.json'], ['3', ''], ['4', ''], ['6', ''], ['5', '']]
    for (const [type, linkname] of cases) {
      const name = type === '5' ? 'files/a.txt/' : 'files/a.txt'
      const tar = Buffer.concat([signedHead(manifestOf([fileA()])), tarEntry(name, Buffer.alloc(0), { type, linkname }), TAR_END])
      await expectRefused(await seal(tar), 'bad-entry-type')
    }
    // a link placed before a file of the same name (the classic "write through the symlink")
    const tar = Buffer.concat([signedHead(manifestOf([fileA()])), tarEntry('files/a.txt', Buffer.alloc(0), { type: '2', linkname: '/tmp/' + escapeName }), tarEntry('files/a.txt', A), TAR_END])
    await expectRefused(await seal(tar), 'bad-entry-type')
  })

  it('refuses oversized files, tar bombs and too many files', async () => {
    const big = fileA({ size: 2 * 2 ** 20 })
    await expectRefused(await seal(Buffer.concat([signedHead(manifestOf([big])), TAR_END])), 'file-too-large', { limits: { maxFileBytes: 2 ** 20 } })
    const many = Array.from({ length: 3 }, (_, i) => fileA({ path: `f${i}`, hash: sha256(Buffer.from(String(i))), size: 600 }))
    await expectRefused(await seal(Buffer.concat([signedHead(manifestOf(many)), TAR_END])), 'total-too-large', { limits: { maxTotalBytes: 1000 } })
    // a tiny entry whose header claims 8 GiB
    const bomb = Buffer.concat([signedHead(manifestOf([fileA()])), tarHeader('files/a.txt', { size: 0o77777777777 }), A])
    await expectRefused(await seal(bomb), 'file-too-large', { limits: { maxFileBytes: 2 ** 20 } })
    await expectRefused(await seal(bomb), 'size-mismatch')
    const count = Array.from({ length: 11 }, (_, i) => fileA({ path: `f${i}`, hash: sha256(Buffer.from(String(i))), size: 1, included: false }))
    await expectRefused(await seal(Buffer.concat([signedHead(manifestOf(count)), TAR_END])), 'too-many-files', { limits: { maxFiles: 10 } })
    const hugeManifest = manifestOf([fileA()], { job: { pad: 'x'.repeat(5000) } })
    await expectRefused(await seal(Buffer.concat([signedHead(hugeManifest), TAR_END])), 'manifest-too-large', { limits: { maxManifestBytes: 4096 } })
    // endless padding after the files: the plaintext cap stops it
    const padded = Buffer.concat([signedHead(manifestOf([fileA()])), tarEntry('files/a.txt', A), Buffer.alloc(9 * 2 ** 20)])
    await expectRefused(await seal(padded), 'too-large')
  })

  it('refuses content that does not match the signed manifest', async () => {
    const wrong = Buffer.from('ALPHA contents\n')
    await expectRefused(await seal(Buffer.concat([signedHead(manifestOf([fileA()])), tarEntry('files/a.txt', wrong), TAR_END])), 'hash-mismatch')
    await expectRefused(await seal(Buffer.concat([signedHead(manifestOf([fileA()])), tarEntry('files/a.txt', Buffer.from('short')), TAR_END])), 'size-mismatch')
    await expectRefused(await seal(Buffer.concat([signedHead(manifestOf([fileA()])), TAR_END])), 'missing-file')
    await expectRefused(await seal(Buffer.concat([signedHead(manifestOf([fileA()])), tarEntry('files/a.txt', A), tarEntry('files/b.txt', A), TAR_END])), 'unexpected-file')
    await expectRefused(await seal(Buffer.concat([signedHead(manifestOf([fileA()])), tarEntry('files/a.txt', A), tarEntry('files/a.txt', A), TAR_END])), 'duplicate-file')
    // not included: must not be in the tar
    await expectRefused(await seal(Buffer.concat([signedHead(manifestOf([fileA({ included: false })])), tarEntry('files/a.txt', A), TAR_END])), 'unexpected-file')
  })

  it('refuses a plaintext that is not a signed-manifest tar', async () => {
    await expectRefused(await seal(Buffer.concat([tarEntry('files/a.txt', A), TAR_END])), 'missing-manifest')
    await expectRefused(await seal(randomBytes(2048)), 'malformed-tar')
    await expectRefused(await seal(Buffer.alloc(0)), 'missing-manifest')
    const m = encodeManifest(manifestOf([fileA()]))
    await expectRefused(await seal(Buffer.concat([tarEntry('manifest.json', m), tarEntry('files/a.txt', A), TAR_END])), 'missing-manifest')
    const notJson = Buffer.from('{not json')
    const tar = Buffer.concat([tarEntry('manifest.json', notJson), tarEntry('manifest.sig', signManifest(notJson, origin.signPrivate)), TAR_END])
    await expectRefused(await seal(tar), 'malformed-manifest')
  })

  it('stops when aborted', async () => {
    const good = await validBundle()
    const ac = new AbortController()
    ac.abort()
    const { tempDir } = area()
    await expect(unpackBundle(pieces(good), unpackOptions(tempDir, { signal: ac.signal }))).rejects.toThrow(/abort/i)
  })
})

// ---------------------------------------------------------------- site keys and invites

describe('site keys and invites', () => {
  it('derives a stable site id from both public keys and round-trips the key set', async () => {
    expect(origin.siteId).toMatch(/^site-[a-z2-7]{32}$/)
    expect(siteId(origin.signPublic, origin.encPublic)).toBe(origin.siteId)
    expect(siteId(origin.signPublic, remote.encPublic)).not.toBe(origin.siteId)
    const dir = mkdtempSync(join(root, 'keys-'))
    const path = join(dir, 'site-keys.json')
    expect(await loadSiteKeys(path)).toBeUndefined()
    const created = await loadOrCreateSiteKeys(path, 'studio A')
    expect(statSync(path).mode & 0o777).toBe(0o600)
    const loaded = await loadOrCreateSiteKeys(path, 'ignored')
    expect(loaded.siteId).toBe(created.siteId)
    expect(loaded.name).toBe('studio A')
    const imported = importSiteKeys(exportSiteKeys(created))
    expect(imported.siteId).toBe(created.siteId)
    expect(publicSiteCard(imported)).toEqual(publicSiteCard(created))
    expect(parseSiteCard(publicSiteCard(created)).siteId).toBe(created.siteId)
    expect(() => parseSiteCard({ ...publicSiteCard(created), encPub: publicSiteCard(other).encPub })).toThrow(SiteKeysError)
    // a key set whose stored id does not match its keys is refused
    const text = JSON.parse(readFileSync(path, 'utf8'))
    writeFileSync(path, JSON.stringify({ ...text, siteId: other.siteId }))
    await expect(loadSiteKeys(path)).rejects.toThrow(SiteKeysError)
    expect(() => importSiteKeys('fmk1.AAAA')).toThrow(SiteKeysError)
    await saveSiteKeys(path, created)
  })

  it('creates and parses invite tokens, naming the bad field', () => {
    const card = publicSiteCard(remote)
    const token = createInvite({ ...card, addresses: ['/ip4/10.0.0.2/tcp/4001'], expiresAt: Date.now() + 3600_000 })
    expect(token).toMatch(/^fmi1\.[A-Za-z0-9_-]+$/)
    const inv = parseInvite(token)
    expect(inv.siteId).toBe(remote.siteId)
    expect(Buffer.from(inv.secret, 'base64url').byteLength).toBe(32)
    const field = (t: string, now?: number): string => { try { parseInvite(t, { now }); return 'none' } catch (e) { expect(e).toBeInstanceOf(InviteError); return (e as InviteError).field } }
    const body = JSON.parse(Buffer.from(token.slice(5), 'base64url').toString())
    const enc = (o: unknown): string => 'fmi1.' + Buffer.from(JSON.stringify(o)).toString('base64url')
    expect(field(token, Date.now() + 7200_000)).toBe('expiresAt')
    expect(field('fmi2.xyz')).toBe('token')
    expect(field('fmi1.!!')).toBe('token')
    expect(field(enc({ ...body, siteId: other.siteId }))).toBe('siteId')
    expect(field(enc({ ...body, encPub: publicSiteCard(other).encPub }))).toBe('siteId')
    expect(field(enc({ ...body, addresses: [] }))).toBe('addresses')
    expect(field(enc({ ...body, addresses: ['not a multiaddr'] }))).toBe('addresses[0]')
    expect(field(enc({ ...body, secret: 'short' }))).toBe('secret')
    expect(field(enc({ ...body, name: '' }))).toBe('name')
    expect(field(enc({ ...body, v: 2 }))).toBe('v')
  })

  it('accepts each invite secret once, and not after it expired', async () => {
    let now = 1_000_000
    const dir = mkdtempSync(join(root, 'invites-'))
    const pending = new PendingInvites(join(dir, 'invites.json'), { now: () => now })
    const card = publicSiteCard(remote)
    const { token, invite } = await pending.issue(card, ['/ip4/10.0.0.2/tcp/4001'], 3600_000)
    const secret = Buffer.from(parseInvite(token, { now }).secret, 'base64url')
    expect(statSync(join(dir, 'invites.json')).mode & 0o777).toBe(0o600)
    expect((await pending.list()).map(i => i.id)).toEqual([invite.id])
    // two joins racing for one secret: exactly one wins
    const results = await Promise.allSettled([pending.consume(secret), pending.consume(secret)])
    expect(results.filter(r => r.status === 'fulfilled')).toHaveLength(1)
    await expect(pending.consume(secret)).rejects.toMatchObject({ name: 'InviteError', field: 'secret' })

    const second = await pending.issue(card, ['/ip4/10.0.0.2/tcp/4001'], 1000)
    now += 2000
    await expect(pending.consume(Buffer.from(parseInvite(second.token, { now: 0 }).secret, 'base64url'))).rejects.toMatchObject({ field: 'expiresAt' })
    await pending.issue(card, ['/ip4/10.0.0.2/tcp/4001'], 1000)
    now += 2000
    expect(await pending.prune()).toBe(1)
    expect(await pending.list()).toEqual([])
  })
})

// ---------------------------------------------------------------- origin store

describe('origin store', () => {
  it('materializes a job from a bundle, dedups against held blobs, and sweeps', async () => {
    let now = Date.now()
    const dir = mkdtempSync(join(root, 'origins-'))
    const store = new OriginStore(join(dir, 'origins'), { now: () => now })
    await store.init()
    const wood = randomBytes(5000)
    const scene = Buffer.from('scene')
    const inputs = [inputFile(dir, 'scene.pov', scene), inputFile(dir, 'tex/wood.png', wood, '/mnt/projects/show/tex/wood.png')]

    const first = await unpackBundle(packBundle(baseOptions(inputs)), unpackOptions(store.intakeDir()))
    const job = await store.materializeJob(origin.siteId, 'j1', first.manifest, first.files)
    rmSync(first.dir, { recursive: true, force: true })
    expect(job.jobDir).toBe(join(dir, 'origins', origin.siteId, 'jobs', 'j1'))
    expect(readFileSync(join(job.inputDir, 'tex/wood.png')).equals(wood)).toBe(true)
    expect(statSync(join(job.inputDir, 'tex/wood.png')).mode & 0o222).toBe(0)
    expect(readdirSync(job.outputDir)).toEqual([])
    expect(job.pathMap).toEqual([{ original: '/mnt/projects/show/tex/wood.png', inside: join(job.inputDir, 'tex/wood.png') }])
    await expect(store.materializeJob(origin.siteId, 'j1', first.manifest, [])).rejects.toMatchObject({ reason: 'job-exists' })

    // second job: the remote says what it lacks, the origin sends only that
    const lacking = await store.missing(origin.siteId, inputs.map(i => i.hash).concat(sha256(Buffer.from('new'))))
    expect(lacking).toEqual([sha256(Buffer.from('new'))])
    const newFile = inputFile(dir, 'new.txt', Buffer.from('new'))
    const all = [...inputs, newFile].map(f => lacking.includes(f.hash) ? f : { ...f, source: undefined })
    const second = await unpackBundle(packBundle(baseOptions(all, { jobId: 'j2' })), unpackOptions(store.intakeDir()))
    expect(second.files.map(f => f.path)).toEqual(['new.txt'])
    const job2 = await store.materializeJob(origin.siteId, 'j2', second.manifest, second.files)
    expect(readFileSync(join(job2.inputDir, 'tex/wood.png')).equals(wood)).toBe(true)

    // a job naming a blob this origin does not hold is refused, and leaves nothing
    const ghost = { ...second.manifest, jobId: 'j3', files: [{ path: 'x', hash: sha256(Buffer.from('ghost')), size: 5, included: false }] }
    await expect(store.materializeJob(origin.siteId, 'j3', ghost, [])).rejects.toMatchObject({ name: 'OriginStoreError', reason: 'missing-blob' })
    expect(existsSync(store.jobDir(origin.siteId, 'j3'))).toBe(false)
    // another origin sees none of it
    expect(await store.missing(other.siteId, [inputs[1].hash])).toEqual([inputs[1].hash])
    await expect(store.materializeJob('../x', 'j1', first.manifest, [])).rejects.toBeInstanceOf(OriginStoreError)

    // sweep: j1 finished goes; blobs used by j2 stay even when old; unused old blobs go
    await store.markFinished(origin.siteId, 'j1')
    now += 8 * 24 * 3600_000
    const swept = await store.sweep()
    expect(swept.jobsRemoved).toBe(1)
    expect(swept.blobsRemoved).toBe(0)
    expect(await store.jobs(origin.siteId)).toEqual(['j2'])
    await store.removeJob(origin.siteId, 'j2')
    const again = await store.sweep()
    expect(again.blobsRemoved).toBe(3)
    expect(await (await store.blobs(origin.siteId)).list()).toEqual([])
  })
})
