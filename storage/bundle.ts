/**
 * The federation bundle: one job and the inputs the remote lacks, signed by
 * the origin site and encrypted end to end to the remote site's key.
 *
 *   header   "FMB1" ver cipher chunkSize ephemeralPub(32) salt(32) idLen recipientSiteId
 *   frames   [flags u8][len u32][AES-256-GCM ciphertext+tag] …, the last one flagged
 *
 * key = HKDF-SHA256(X25519(ephemeral, recipient), salt, "farmesh bundle v1");
 * chunk i is sealed with nonce = i ‖ final-flag and the header as AAD (the
 * STREAM construction): a reordered, dropped, truncated or altered chunk fails
 * to open. Every chunk but the last carries exactly `chunkSize` plaintext
 * bytes, so the ciphertext is a pure function of (plaintext, key material) and
 * a push can resume at any byte offset by regenerating and skipping.
 *
 * The plaintext is a tar: `manifest.json`, `manifest.sig` (Ed25519 by the
 * origin site), then `files/<path>` for each included input. Encryption only
 * hides the bundle — anyone may encrypt to a public key — so authenticity
 * comes from the signature, checked before any file is written, and from the
 * signed per-file hashes, checked as each file lands.
 */
import {
  createCipheriv, createDecipheriv, createHash, createPrivateKey, createPublicKey, diffieHellman, generateKeyPairSync,
  hkdfSync, randomBytes, sign, verify, type KeyObject
} from 'node:crypto'
import { constants, createReadStream } from 'node:fs'
import { mkdir, mkdtemp, open, rm } from 'node:fs/promises'
import { join, posix } from 'node:path'
import { extract as tarExtract, pack as tarPack, type Header, type Pack } from 'tar-stream'
import { BLOB_HASH_RE, writeFully } from './blob-store.js'
import { encPublicKey, rawPublicKey, signPublicKey, SITE_ID_RE } from './site-keys.js'

// ---------------------------------------------------------------- errors and limits

export type BundleErrorReason =
  | 'malformed-header' | 'unsupported-version' | 'wrong-recipient' | 'malformed-frame' | 'decrypt-failed'
  | 'truncated' | 'trailing-data' | 'too-large' | 'bad-offset'
  | 'malformed-tar' | 'missing-manifest' | 'manifest-too-large' | 'malformed-manifest'
  | 'untrusted-origin' | 'bad-signature' | 'replayed' | 'expired'
  | 'bad-entry-type' | 'bad-path' | 'unexpected-file' | 'duplicate-file' | 'missing-file'
  | 'file-too-large' | 'total-too-large' | 'too-many-files' | 'size-mismatch' | 'hash-mismatch'
  | 'source-changed' | 'refused'

export class BundleError extends Error {
  readonly reason: BundleErrorReason
  constructor (reason: BundleErrorReason, message: string) {
    super(`bundle ${reason}: ${message}`)
    this.name = 'BundleError'
    this.reason = reason
  }
}

export interface BundleLimits {
  /** sum of the included files' sizes */
  maxTotalBytes: number
  /** files listed in the manifest (included or not) */
  maxFiles: number
  maxFileBytes: number
  maxManifestBytes: number
}

export const DEFAULT_BUNDLE_LIMITS: BundleLimits = {
  maxTotalBytes: 64 * 2 ** 30,
  maxFiles: 100_000,
  maxFileBytes: 32 * 2 ** 30,
  maxManifestBytes: 16 * 2 ** 20
}

const NO_LIMITS: BundleLimits = {
  maxTotalBytes: Number.MAX_SAFE_INTEGER, maxFiles: Number.MAX_SAFE_INTEGER, maxFileBytes: Number.MAX_SAFE_INTEGER, maxManifestBytes: Number.MAX_SAFE_INTEGER
}

// ---------------------------------------------------------------- the encrypted envelope

const MAGIC = Buffer.from('FMB1')
const VERSION = 1
const CIPHER_AES_256_GCM = 1
const FIXED_HEADER = 4 + 1 + 1 + 4 + 32 + 32 + 1
const MAX_SITE_ID = 64
const TAG = 16
const FRAME_HEAD = 5
const FLAG_FINAL = 1
const HKDF_INFO = Buffer.from('farmesh bundle v1')
export const DEFAULT_CHUNK_SIZE = 256 * 1024
const MIN_CHUNK_SIZE = 1024
const MAX_CHUNK_SIZE = 1024 * 1024

/** The random parts of one encrypted stream; keep them to resume a push byte-identically. */
export interface StreamParams {
  ephemeralPrivate: KeyObject
  salt: Uint8Array
}

export function newStreamParams (): StreamParams {
  return { ephemeralPrivate: generateKeyPairSync('x25519').privateKey, salt: randomBytes(32) }
}

/** For persisting an unfinished push across a restart. A secret: whoever holds it can decrypt the bundle. */
export function exportStreamParams (p: StreamParams): string {
  const der = p.ephemeralPrivate.export({ type: 'pkcs8', format: 'der' })
  return `${der.toString('base64url')}.${Buffer.from(p.salt).toString('base64url')}`
}

export function importStreamParams (text: string): StreamParams {
  const [der, salt] = text.split('.')
  const ephemeralPrivate = createPrivateKey({ key: Buffer.from(der ?? '', 'base64url'), format: 'der', type: 'pkcs8' })
  const s = Buffer.from(salt ?? '', 'base64url')
  if (ephemeralPrivate.asymmetricKeyType !== 'x25519' || s.byteLength !== 32) throw new TypeError('malformed stream parameters')
  return { ephemeralPrivate, salt: s }
}

function asX25519Public (k: Uint8Array | KeyObject): KeyObject {
  return k instanceof Uint8Array ? encPublicKey(k) : k
}

function asEd25519Public (k: Uint8Array | KeyObject): KeyObject {
  return k instanceof Uint8Array ? signPublicKey(k) : k
}

function deriveKey (priv: KeyObject, pub: KeyObject, salt: Uint8Array): Buffer {
  let shared: Buffer
  try {
    shared = diffieHellman({ privateKey: priv, publicKey: pub })
  } catch (err) {
    throw new BundleError('malformed-header', `key agreement failed: ${(err as Error).message}`)
  }
  // a low-order public key gives an all-zero secret: refuse rather than use a known key
  if (shared.every(b => b === 0)) throw new BundleError('malformed-header', 'degenerate ephemeral key')
  return Buffer.from(hkdfSync('sha256', shared, salt, HKDF_INFO, 32))
}

function encodeHeader (chunkSize: number, ephemeralPub: Uint8Array, salt: Uint8Array, recipientSiteId: string): Buffer {
  const id = Buffer.from(recipientSiteId, 'ascii')
  if (id.byteLength === 0 || id.byteLength > MAX_SITE_ID) throw new RangeError('recipient site id must be 1-64 ASCII characters')
  const h = Buffer.alloc(FIXED_HEADER + id.byteLength)
  MAGIC.copy(h, 0)
  h[4] = VERSION
  h[5] = CIPHER_AES_256_GCM
  h.writeUInt32BE(chunkSize, 6)
  Buffer.from(ephemeralPub).copy(h, 10)
  Buffer.from(salt).copy(h, 42)
  h[74] = id.byteLength
  id.copy(h, 75)
  return h
}

function chunkNonce (counter: number, final: boolean): Buffer {
  const iv = Buffer.alloc(12)
  iv.writeUIntBE(counter, 3, 6) // 2^48 chunks: far beyond any bundle
  iv[11] = final ? 1 : 0
  return iv
}

/** One sealed frame as its three parts (head, ciphertext, tag): no copy to join them. */
function seal (key: Buffer, aad: Buffer, counter: number, final: boolean, data: Buffer): [Buffer, Buffer, Buffer] {
  const c = createCipheriv('aes-256-gcm', key, chunkNonce(counter, final))
  c.setAAD(aad)
  const ct = c.update(data)
  c.final()
  const head = Buffer.alloc(FRAME_HEAD)
  head[0] = final ? FLAG_FINAL : 0
  head.writeUInt32BE(ct.byteLength + TAG, 1)
  return [head, ct, c.getAuthTag()]
}

/** Size of the encrypted stream for a plaintext of `plaintextBytes` (progress bars, resume checks). */
export function encryptedSize (plaintextBytes: number, recipientSiteId: string, chunkSize = DEFAULT_CHUNK_SIZE): number {
  const chunks = Math.max(1, Math.ceil(plaintextBytes / chunkSize))
  return FIXED_HEADER + Buffer.byteLength(recipientSiteId, 'ascii') + chunks * (FRAME_HEAD + TAG) + plaintextBytes
}

function toBuffer (u: Uint8Array): Buffer {
  return Buffer.isBuffer(u) ? u : Buffer.from(u.buffer, u.byteOffset, u.byteLength)
}

/** Cuts any stream into `size`-byte chunks, holding one back so the last can be flagged as such. */
async function * rechunk (src: AsyncIterable<Uint8Array>, size: number): AsyncGenerator<{ data: Buffer, final: boolean }> {
  let parts: Buffer[] = []
  let len = 0
  let held: Buffer | undefined
  for await (const piece of src) {
    let buf = toBuffer(piece)
    while (buf.byteLength > 0) {
      const take = Math.min(size - len, buf.byteLength)
      parts.push(buf.subarray(0, take))
      len += take
      buf = buf.subarray(take)
      if (len === size) {
        if (held !== undefined) yield { data: held, final: false }
        held = parts.length === 1 ? parts[0] : Buffer.concat(parts, len)
        parts = []
        len = 0
      }
    }
  }
  if (len > 0) {
    if (held !== undefined) yield { data: held, final: false }
    yield { data: Buffer.concat(parts, len), final: true }
  } else {
    yield { data: held ?? Buffer.alloc(0), final: true }
  }
}

export interface EncryptOptions {
  recipientEncPub: Uint8Array | KeyObject
  recipientSiteId: string
  /** fixed to regenerate an earlier stream (resume); random otherwise */
  params?: StreamParams
  chunkSize?: number
  /** skip this many bytes of the encrypted stream (chunks before it are not even encrypted) */
  offset?: number
  signal?: AbortSignal
}

/**
 * The encrypted envelope around any plaintext stream. Options are checked
 * here, at the call; the stream itself starts on the first read.
 */
export function encryptStream (plaintext: AsyncIterable<Uint8Array>, opts: EncryptOptions): AsyncGenerator<Uint8Array> {
  const chunkSize = opts.chunkSize ?? DEFAULT_CHUNK_SIZE
  if (!Number.isInteger(chunkSize) || chunkSize < MIN_CHUNK_SIZE || chunkSize > MAX_CHUNK_SIZE) throw new RangeError('chunk size out of range')
  const offset = opts.offset ?? 0
  if (!Number.isSafeInteger(offset) || offset < 0) throw new RangeError('offset must be a non-negative integer')
  if (offset > 0 && opts.params === undefined) throw new RangeError('resuming at an offset needs the stream parameters of the original push')
  const params = opts.params ?? newStreamParams()
  const ephemeralPub = rawPublicKey(createPublicKey(params.ephemeralPrivate))
  const header = encodeHeader(chunkSize, ephemeralPub, params.salt, opts.recipientSiteId)
  const key = deriveKey(params.ephemeralPrivate, asX25519Public(opts.recipientEncPub), params.salt)
  return sealStream(plaintext, header, key, chunkSize, offset, opts.signal)
}

async function * sealStream (plaintext: AsyncIterable<Uint8Array>, header: Buffer, key: Buffer, chunkSize: number, offset: number, signal?: AbortSignal): AsyncGenerator<Uint8Array> {
  let skip = offset
  if (skip < header.byteLength) {
    yield header.subarray(skip)
    skip = 0
  } else {
    skip -= header.byteLength
  }
  let counter = 0
  for await (const { data, final } of rechunk(plaintext, chunkSize)) {
    signal?.throwIfAborted()
    const frameLen = FRAME_HEAD + data.byteLength + TAG
    if (skip >= frameLen) {
      skip -= frameLen // already delivered: no need to encrypt it again
    } else {
      const frame = seal(key, header, counter, final, data)
      if (skip > 0) {
        yield Buffer.concat(frame).subarray(skip) // the one frame a resumed push starts inside
      } else {
        yield * frame
      }
      skip = 0
    }
    counter++
  }
  if (skip > 0) throw new BundleError('bad-offset', 'resume offset is beyond the end of the bundle')
}

/** Reads exact byte counts from a stream of arbitrary pieces, holding at most one request's worth. */
class ByteReader {
  private readonly it: AsyncIterator<Uint8Array>
  /** pieces not yet consumed are bufs[head…] (consumed slots are emptied at once, so they can be freed); an index, not shift(), so tiny pieces stay linear */
  private bufs: Array<Buffer | undefined> = []
  private head = 0
  private buffered = 0
  private done = false

  constructor (src: AsyncIterable<Uint8Array>) { this.it = src[Symbol.asyncIterator]() }

  /** exactly n bytes; null at a clean end (nothing read); 'truncated' in between */
  async read (n: number): Promise<Buffer | null> {
    while (this.buffered < n && !this.done) {
      const r = await this.it.next()
      if (r.done === true) { this.done = true; break }
      const b = toBuffer(r.value)
      if (b.byteLength === 0) continue
      this.bufs.push(b)
      this.buffered += b.byteLength
    }
    if (this.buffered === 0 && n > 0) return null
    if (this.buffered < n) throw new BundleError('truncated', 'the stream ended in the middle of a frame')
    this.buffered -= n
    const first = this.bufs[this.head]!
    let out: Buffer
    if (first.byteLength >= n) { // the usual case: no copy
      out = first.subarray(0, n)
      if (first.byteLength === n) this.bufs[this.head++] = undefined
      else this.bufs[this.head] = first.subarray(n)
    } else {
      // spans pieces: copy just these n bytes
      out = Buffer.allocUnsafe(n)
      let off = 0
      while (off < n) {
        const b = this.bufs[this.head]!
        const take = Math.min(b.byteLength, n - off)
        b.copy(out, off, 0, take)
        off += take
        if (take === b.byteLength) this.bufs[this.head++] = undefined
        else this.bufs[this.head] = b.subarray(take)
      }
    }
    if (this.head > 1024 || this.head === this.bufs.length) { this.bufs = this.bufs.slice(this.head); this.head = 0 }
    return out
  }

  async close (): Promise<void> { await this.it.return?.() }
}

export interface DecryptOptions {
  recipientEncPriv: KeyObject
  /** our own site id: a bundle addressed to another site is refused before any decryption */
  recipientSiteId: string
  /** refuse once more plaintext than this has come out (read again for every chunk) */
  maxPlaintextBytes?: () => number
  signal?: AbortSignal
}

/** Opens the envelope chunk by chunk; yields only authenticated plaintext. */
export async function * decryptStream (source: AsyncIterable<Uint8Array>, opts: DecryptOptions): AsyncGenerator<Buffer> {
  const r = new ByteReader(source)
  try {
    const fixed = await r.read(FIXED_HEADER)
    if (fixed === null) throw new BundleError('malformed-header', 'empty stream')
    if (!fixed.subarray(0, 4).equals(MAGIC)) throw new BundleError('malformed-header', 'not a farmesh bundle')
    if (fixed[4] !== VERSION) throw new BundleError('unsupported-version', `version ${fixed[4]}`)
    if (fixed[5] !== CIPHER_AES_256_GCM) throw new BundleError('unsupported-version', `cipher ${fixed[5]}`)
    const chunkSize = fixed.readUInt32BE(6)
    if (chunkSize < MIN_CHUNK_SIZE || chunkSize > MAX_CHUNK_SIZE) throw new BundleError('malformed-header', `chunk size ${chunkSize}`)
    const idLen = fixed[74]
    if (idLen === 0 || idLen > MAX_SITE_ID) throw new BundleError('malformed-header', 'bad recipient id length')
    const idBytes = await r.read(idLen)
    if (idBytes === null) throw new BundleError('truncated', 'header cut short')
    const recipient = idBytes.toString('latin1')
    if (!/^[\x21-\x7e]+$/.test(recipient)) throw new BundleError('malformed-header', 'bad recipient id')
    if (recipient !== opts.recipientSiteId) throw new BundleError('wrong-recipient', `addressed to ${recipient}`)
    const header = Buffer.concat([fixed, idBytes])
    let ephemeral: KeyObject
    try { ephemeral = encPublicKey(fixed.subarray(10, 42)) } catch { throw new BundleError('malformed-header', 'bad ephemeral key') }
    const key = deriveKey(opts.recipientEncPriv, ephemeral, fixed.subarray(42, 74))

    let counter = 0
    let total = 0
    for (;;) {
      opts.signal?.throwIfAborted()
      const head = await r.read(FRAME_HEAD)
      if (head === null) throw new BundleError('truncated', `the stream ended after ${counter} chunks without the final one`)
      const flags = head[0]
      const len = head.readUInt32BE(1)
      const final = flags === FLAG_FINAL
      if ((flags & ~FLAG_FINAL) !== 0) throw new BundleError('malformed-frame', `flags ${flags}`)
      // every chunk but the last is full: fixed sizes keep the stream resumable and cheap to check
      if (final ? (len < TAG || len > chunkSize + TAG) : len !== chunkSize + TAG) throw new BundleError('malformed-frame', `frame length ${len}`)
      const body = await r.read(len)
      if (body === null) throw new BundleError('truncated', 'frame body missing')
      let plain: Buffer
      try {
        const d = createDecipheriv('aes-256-gcm', key, chunkNonce(counter, final))
        d.setAAD(header)
        d.setAuthTag(body.subarray(len - TAG))
        plain = d.update(body.subarray(0, len - TAG))
        d.final() // GCM yields nothing here: it only checks the tag
      } catch {
        throw new BundleError('decrypt-failed', `chunk ${counter} does not authenticate (tampered, reordered, or not for this key)`)
      }
      total += plain.byteLength
      const cap = opts.maxPlaintextBytes?.() ?? Infinity
      if (total > cap) throw new BundleError('too-large', `more than ${cap} bytes of plaintext`)
      counter++
      if (plain.byteLength > 0) yield plain
      if (final) {
        if (await r.read(1) !== null) throw new BundleError('trailing-data', 'bytes after the final chunk')
        return
      }
    }
  } finally {
    await r.close()
  }
}

// ---------------------------------------------------------------- manifest

export interface ManifestFile {
  /** posix path relative to the job's input directory */
  path: string
  hash: string
  size: number
  /** false: the bytes are not in this bundle; the remote already holds this hash for the origin */
  included: boolean
  /** absolute path on the submitting host, for the sandbox's path mapping */
  original?: string
}

export interface BundleManifest {
  v: 1
  jobId: string
  originSiteId: string
  recipientSiteId: string
  createdAt: number
  /** unique per bundle: a replayed bundle is refused */
  nonce: string
  /** the job description (validated by the intake, not here) */
  job: unknown
  files: ManifestFile[]
}

export const MANIFEST_ENTRY = 'manifest.json'
export const SIGNATURE_ENTRY = 'manifest.sig'
const FILES_PREFIX = 'files/'
const SIG_CONTEXT = Buffer.from('farmesh bundle manifest v1\0')
export const JOB_ID_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/
const NONCE_RE = /^[A-Za-z0-9_-]{16,128}$/
const MAX_PATH_BYTES = 1024
const MAX_ORIGINAL_BYTES = 4096

export function newBundleNonce (): string {
  return randomBytes(18).toString('base64url')
}

/** JSON with object keys sorted at every level, so the same manifest always has the same bytes. */
export function canonicalJson (value: unknown): string {
  const norm = (v: unknown): unknown => {
    if (v !== null && typeof v === 'object' && typeof (v as any).toJSON === 'function') return norm((v as any).toJSON())
    if (Array.isArray(v)) return v.map(norm)
    if (v !== null && typeof v === 'object') {
      const out: Record<string, unknown> = {}
      for (const k of Object.keys(v).sort()) out[k] = norm((v as Record<string, unknown>)[k])
      return out
    }
    if (typeof v === 'number' && !Number.isFinite(v)) throw new TypeError('non-finite number in manifest')
    return v
  }
  return JSON.stringify(norm(value))
}

export function encodeManifest (m: BundleManifest): Buffer {
  return Buffer.from(canonicalJson(m))
}

export function signManifest (manifestBytes: Uint8Array, signPrivate: KeyObject): Buffer {
  return sign(null, Buffer.concat([SIG_CONTEXT, manifestBytes]), signPrivate)
}

export function verifyManifest (manifestBytes: Uint8Array, signature: Uint8Array, signPublic: Uint8Array | KeyObject): boolean {
  try {
    return signature.byteLength === 64 && verify(null, Buffer.concat([SIG_CONTEXT, manifestBytes]), asEd25519Public(signPublic), signature)
  } catch {
    return false
  }
}

/** A relative posix path that stays where it is put: no `..`, `.`, empty or absolute parts, no control characters. */
export function isSafeRelativePath (p: unknown): p is string {
  if (typeof p !== 'string' || p.length === 0 || Buffer.byteLength(p) > MAX_PATH_BYTES) return false
  if (/[\p{Cc}\\]/u.test(p)) return false
  const parts = p.split('/')
  if (parts.length > 64) return false
  return parts.every(s => s !== '' && s !== '.' && s !== '..' && Buffer.byteLength(s) <= 255)
}

/** An absolute, normalized posix path other than `/` (where a scene expects a support file). */
export function isSafeOriginalPath (p: unknown): p is string {
  return typeof p === 'string' && p.startsWith('/') && p !== '/' && Buffer.byteLength(p) <= MAX_ORIGINAL_BYTES &&
    !/\p{Cc}/u.test(p) && posix.normalize(p) === p && !p.endsWith('/')
}

function bad (reason: BundleErrorReason, message: string): never { throw new BundleError(reason, message) }

/** Parses and checks a manifest's shape and limits (not its signature or freshness). */
export function parseManifest (bytes: Uint8Array, limits: BundleLimits = DEFAULT_BUNDLE_LIMITS): BundleManifest {
  let v: any
  try { v = JSON.parse(toBuffer(bytes).toString('utf8')) } catch { bad('malformed-manifest', 'not JSON') }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) bad('malformed-manifest', 'not an object')
  if (v.v !== 1) bad('malformed-manifest', `version ${String(v.v)}`)
  if (typeof v.jobId !== 'string' || !JOB_ID_RE.test(v.jobId)) bad('malformed-manifest', 'jobId')
  if (typeof v.originSiteId !== 'string' || !SITE_ID_RE.test(v.originSiteId)) bad('malformed-manifest', 'originSiteId')
  if (typeof v.recipientSiteId !== 'string' || !SITE_ID_RE.test(v.recipientSiteId)) bad('malformed-manifest', 'recipientSiteId')
  if (!Number.isSafeInteger(v.createdAt) || v.createdAt <= 0) bad('malformed-manifest', 'createdAt')
  if (typeof v.nonce !== 'string' || !NONCE_RE.test(v.nonce)) bad('malformed-manifest', 'nonce')
  if (!('job' in v)) bad('malformed-manifest', 'job')
  if (!Array.isArray(v.files)) bad('malformed-manifest', 'files')
  if (v.files.length > limits.maxFiles) bad('too-many-files', `${v.files.length} files, limit ${limits.maxFiles}`)
  const paths = new Set<string>()
  const dirs = new Set<string>()
  const includedHashes = new Set<string>()
  let total = 0
  const files: ManifestFile[] = v.files.map((f: any, i: number): ManifestFile => {
    if (typeof f !== 'object' || f === null) bad('malformed-manifest', `files[${i}]`)
    if (!isSafeRelativePath(f.path)) bad('bad-path', `files[${i}].path ${JSON.stringify(String(f.path)).slice(0, 200)}`)
    if (typeof f.hash !== 'string' || !BLOB_HASH_RE.test(f.hash)) bad('malformed-manifest', `files[${i}].hash`)
    if (!Number.isSafeInteger(f.size) || f.size < 0) bad('malformed-manifest', `files[${i}].size`)
    if (typeof f.included !== 'boolean') bad('malformed-manifest', `files[${i}].included`)
    if (f.original !== undefined && !isSafeOriginalPath(f.original)) bad('bad-path', `files[${i}].original`)
    // a file and a directory of the same name cannot both exist: refuse rather than pick one
    if (paths.has(f.path) || dirs.has(f.path)) bad('bad-path', `files[${i}].path ${f.path} collides with another entry`)
    const parts = f.path.split('/')
    for (let k = 1; k < parts.length; k++) {
      const d = parts.slice(0, k).join('/')
      if (paths.has(d)) bad('bad-path', `files[${i}].path ${f.path} is inside another file`)
      dirs.add(d)
    }
    paths.add(f.path)
    if (f.included === true) {
      if (includedHashes.has(f.hash)) bad('malformed-manifest', `files[${i}] repeats included content ${f.hash}`)
      includedHashes.add(f.hash)
      if (f.size > limits.maxFileBytes) bad('file-too-large', `${f.path}: ${f.size} bytes, limit ${limits.maxFileBytes}`)
      total += f.size
      if (total > limits.maxTotalBytes) bad('total-too-large', `more than ${limits.maxTotalBytes} bytes of files`)
    }
    return { path: f.path, hash: f.hash, size: f.size, included: f.included, ...(f.original !== undefined ? { original: f.original } : {}) }
  })
  return { v: 1, jobId: v.jobId, originSiteId: v.originSiteId, recipientSiteId: v.recipientSiteId, createdAt: v.createdAt, nonce: v.nonce, job: v.job, files }
}

// ---------------------------------------------------------------- writer

export interface BundleInputFile {
  path: string
  hash: string
  size: number
  original?: string
  /** absolute path of the bytes on this host; omit for a file the remote already holds */
  source?: string
}

export interface PackBundleOptions {
  job: unknown
  /** every input of the job; those with `source` are sent (once per distinct hash) */
  files: BundleInputFile[]
  /** the origin site's Ed25519 private key */
  signer: KeyObject
  recipientEncPub: Uint8Array | KeyObject
  recipientSiteId: string
  jobId: string
  originSiteId: string
  createdAt: number
  nonce: string
  /** fixed stream parameters: pass the same ones (and the same everything else) to resume */
  params?: StreamParams
  /** skip this many bytes of the encrypted stream (the receiver already has them) */
  offset?: number
  signal?: AbortSignal
}

function fixedHeader (name: string, size: number, mtime: Date): Header {
  // every field fixed: the tar, and so the ciphertext, depends only on the inputs
  return { name, size, mode: 0o644, mtime, type: 'file', uid: 0, gid: 0, uname: '', gname: '', linkname: '', devmajor: 0, devminor: 0 }
}

async function waitDrain (s: { once: (ev: string, fn: (...a: any[]) => void) => unknown, off: (ev: string, fn: (...a: any[]) => void) => unknown }): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const done = (): void => { s.off('drain', done); s.off('close', closed); resolve() }
    const closed = (): void => { s.off('drain', done); s.off('close', closed); reject(new Error('stream closed')) }
    s.once('drain', done)
    s.once('close', closed)
  })
}

async function addFile (p: Pack, f: BundleInputFile & { source: string }, mtime: Date, signal?: AbortSignal): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const sink = p.entry(fixedHeader(FILES_PREFIX + f.path, f.size, mtime), err => { if (err != null) reject(err); else resolve() })
    sink.on('error', () => {}) // reported through the promise; an unheard 'error' would crash the process
    ;(async () => {
      const hash = createHash('sha256')
      let n = 0
      for await (const chunk of createReadStream(f.source, { highWaterMark: 1024 * 1024 })) {
        signal?.throwIfAborted()
        const b = chunk as Buffer
        n += b.byteLength
        if (n > f.size) throw new BundleError('source-changed', `${f.source} grew past its recorded ${f.size} bytes`)
        hash.update(b)
        if (!sink.write(b)) await waitDrain(sink)
      }
      if (n !== f.size) throw new BundleError('source-changed', `${f.source} has ${n} bytes, recorded ${f.size}`)
      if (hash.digest('hex') !== f.hash) throw new BundleError('source-changed', `${f.source} no longer matches its recorded hash`)
      sink.end(null) // streamx: null = no final chunk
    })().catch(err => { sink.destroy(err); reject(err) })
  })
}

async function addBuffer (p: Pack, name: string, data: Buffer, mtime: Date): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    p.entry(fixedHeader(name, data.byteLength, mtime), data, err => { if (err != null) reject(err); else resolve() })
  })
}

/** The plaintext tar: manifest, signature, then the included files, streamed with backpressure. */
async function * bundleTar (manifestBytes: Buffer, signature: Buffer, files: Array<BundleInputFile & { source: string }>, mtime: Date, signal?: AbortSignal): AsyncGenerator<Uint8Array> {
  const p = tarPack()
  p.on('error', () => {}) // surfaces through the iteration below
  let failure: unknown
  const producer = (async () => {
    try {
      await addBuffer(p, MANIFEST_ENTRY, manifestBytes, mtime)
      await addBuffer(p, SIGNATURE_ENTRY, signature, mtime)
      for (const f of files) await addFile(p, f, mtime, signal)
      p.finalize()
    } catch (err) {
      failure = err
      p.destroy(err as Error)
    }
  })()
  try {
    for await (const chunk of p as AsyncIterable<Uint8Array>) yield chunk
    if (failure !== undefined) throw failure
  } catch (err) {
    throw failure ?? err
  } finally {
    if (!p.destroyed) p.destroy()
    await producer
  }
}

/** The manifest a bundle of these files will carry (included: first file of each hash that has a source). */
export function bundleManifest (opts: Pick<PackBundleOptions, 'job' | 'files' | 'jobId' | 'originSiteId' | 'recipientSiteId' | 'createdAt' | 'nonce'>): { manifest: BundleManifest, included: Array<BundleInputFile & { source: string }> } {
  const sent = new Set<string>()
  const included: Array<BundleInputFile & { source: string }> = []
  const files = opts.files.map((f): ManifestFile => {
    const include = f.source !== undefined && !sent.has(f.hash)
    if (include) { sent.add(f.hash); included.push(f as BundleInputFile & { source: string }) }
    return { path: f.path, hash: f.hash, size: f.size, included: include, ...(f.original !== undefined ? { original: f.original } : {}) }
  })
  const manifest: BundleManifest = {
    v: 1, jobId: opts.jobId, originSiteId: opts.originSiteId, recipientSiteId: opts.recipientSiteId, createdAt: opts.createdAt, nonce: opts.nonce, job: opts.job, files
  }
  return { manifest, included }
}

/**
 * The bundle as a stream of encrypted bytes. Deterministic: the same options
 * (including `params`) give the same bytes, so `offset` resumes a push.
 * Inputs are read as they are sent and checked against their recorded hash.
 */
export function packBundle (opts: PackBundleOptions): AsyncGenerator<Uint8Array> {
  const { manifest, included } = bundleManifest(opts)
  const manifestBytes = encodeManifest(manifest)
  // what we send must pass the reader's own structural checks
  parseManifest(manifestBytes, NO_LIMITS)
  const signature = signManifest(manifestBytes, opts.signer)
  const mtime = new Date(Math.floor(opts.createdAt / 1000) * 1000)
  return encryptStream(bundleTar(manifestBytes, signature, included, mtime, opts.signal), {
    recipientEncPub: opts.recipientEncPub,
    recipientSiteId: opts.recipientSiteId,
    params: opts.params,
    offset: opts.offset,
    signal: opts.signal
  })
}

// ---------------------------------------------------------------- reader

export interface UnpackOptions {
  recipientEncPriv: KeyObject
  recipientSiteId: string
  /** the signing key of a federated site, undefined for any other */
  trustedSigners: (originSiteId: string) => Uint8Array | KeyObject | undefined | Promise<Uint8Array | KeyObject | undefined>
  /** true when this origin's nonce was seen before (see README of the intake: record it on accept) */
  seenNonce: (originSiteId: string, nonce: string) => boolean | Promise<boolean>
  limits?: Partial<BundleLimits>
  /** files land in a fresh directory under here; nothing is written anywhere else */
  tempDir: string
  /** refuse bundles created longer ago than this (default 7 days) — bounds how long nonces must be kept */
  maxAgeMs?: number
  /** tolerated clock difference for bundles from the future (default 10 minutes) */
  maxClockSkewMs?: number
  now?: number
  signal?: AbortSignal
  /**
   * Called once the manifest is verified, before any file is written: the
   * receiver's own checks (can it run the job, is there room). Throw a
   * BundleError('refused', …) to refuse early, without taking the files.
   */
  onManifest?: (m: BundleManifest) => void | Promise<void>
}

export interface UnpackedFile {
  path: string
  hash: string
  size: number
  /** where the verified bytes are, inside `dir` */
  tempPath: string
}

export interface UnpackedBundle {
  manifest: BundleManifest
  /** the included files, in manifest order */
  files: UnpackedFile[]
  /** the directory holding them; the caller removes it once the files are stored */
  dir: string
}

const ENTRY_OVERHEAD = 4096 // tar header, pax header for long names, padding: generous
const PRE_MANIFEST_SLACK = 8 * 1024 * 1024
const WRITE_BATCH = 1024 * 1024

async function readEntry (entry: AsyncIterable<Uint8Array>, max: number, what: string): Promise<Buffer> {
  const parts: Buffer[] = []
  let n = 0
  for await (const c of entry) {
    n += c.byteLength
    if (n > max) bad(what === MANIFEST_ENTRY ? 'manifest-too-large' : 'malformed-tar', `${what} over ${max} bytes`)
    parts.push(toBuffer(c))
  }
  return Buffer.concat(parts, n)
}

/**
 * Verifies and unpacks a bundle into a fresh directory under `tempDir`.
 * Files are written under their content hash (never under a name from the
 * bundle), each only after the manifest's signature, freshness and nonce
 * checked out, and each checked against its signed hash. On any refusal the
 * directory is removed and a BundleError says why.
 */
export async function unpackBundle (source: AsyncIterable<Uint8Array>, opts: UnpackOptions): Promise<UnpackedBundle> {
  const limits: BundleLimits = { ...DEFAULT_BUNDLE_LIMITS, ...opts.limits }
  const now = opts.now ?? Date.now()
  const maxAge = opts.maxAgeMs ?? 7 * 24 * 3600_000
  const skew = opts.maxClockSkewMs ?? 10 * 60_000
  opts.signal?.throwIfAborted()
  await mkdir(opts.tempDir, { recursive: true, mode: 0o700 })
  const dir = await mkdtemp(join(opts.tempDir, 'bundle-'))

  let cap = limits.maxManifestBytes + PRE_MANIFEST_SLACK
  let plaintext = 0
  const extract = tarExtract()
  extract.on('error', () => {}) // surfaces through the entries loop
  const internal = new AbortController()
  const signal = opts.signal === undefined ? internal.signal : AbortSignal.any([opts.signal, internal.signal])
  let failure: unknown
  const fail = (err: unknown): void => {
    failure ??= err
    internal.abort(err)
    extract.destroy(err as Error)
  }

  const feeder = (async () => {
    try {
      const counted = (async function * () {
        for await (const pt of decryptStream(source, { recipientEncPriv: opts.recipientEncPriv, recipientSiteId: opts.recipientSiteId, maxPlaintextBytes: () => cap, signal })) {
          plaintext += pt.byteLength
          yield pt
        }
      })()
      for await (const pt of counted) {
        if (extract.destroyed) return
        if (!extract.write(pt)) await waitDrain(extract)
      }
      extract.end(null)
    } catch (err) {
      fail(err)
    }
  })()

  const files: UnpackedFile[] = []
  let manifest: BundleManifest | undefined
  try {
    let manifestBytes: Buffer | undefined
    let index = 0
    let extractedBytes = 0
    const pending = new Map<string, ManifestFile>() // included files not yet seen
    const done = new Set<string>()
    for await (const entry of extract as AsyncIterable<AsyncIterable<Uint8Array> & { header: Header }>) {
      signal.throwIfAborted()
      const h = entry.header
      if (index === 0) {
        if (h.type !== 'file' || h.name !== MANIFEST_ENTRY) bad('missing-manifest', `first entry is ${h.type} ${JSON.stringify(h.name)}`)
        if (h.size > limits.maxManifestBytes) bad('manifest-too-large', `${h.size} bytes, limit ${limits.maxManifestBytes}`)
        manifestBytes = await readEntry(entry, limits.maxManifestBytes, MANIFEST_ENTRY)
      } else if (index === 1) {
        if (h.type !== 'file' || h.name !== SIGNATURE_ENTRY) bad('missing-manifest', 'second entry is not the signature')
        const sig = await readEntry(entry, 64, SIGNATURE_ENTRY)
        manifest = await checkManifest(manifestBytes!, sig, opts, limits, now, maxAge, skew)
        await opts.onManifest?.(manifest)
        for (const f of manifest.files) if (f.included) pending.set(f.path, f)
        // from here the tar is the origin's: allow its declared files and per-entry overhead, no more
        const included = [...pending.values()]
        cap = plaintext + included.reduce((s, f) => s + f.size, 0) + (included.length + 2) * ENTRY_OVERHEAD + PRE_MANIFEST_SLACK
      } else {
        if (h.type !== 'file') bad('bad-entry-type', `${h.type} entry ${JSON.stringify(h.name)}: only regular files are accepted`)
        if (!h.name.startsWith(FILES_PREFIX) || !isSafeRelativePath(h.name.slice(FILES_PREFIX.length))) bad('bad-path', `entry ${JSON.stringify(h.name).slice(0, 300)}`)
        const path = h.name.slice(FILES_PREFIX.length)
        const f = pending.get(path)
        if (f === undefined) bad(done.has(path) ? 'duplicate-file' : 'unexpected-file', `entry ${path} is not an included file of the manifest`)
        if (files.length + 1 > limits.maxFiles) bad('too-many-files', `more than ${limits.maxFiles} files`)
        if (h.size > limits.maxFileBytes) bad('file-too-large', `${path}: ${h.size} bytes, limit ${limits.maxFileBytes}`)
        if (h.size !== f.size) bad('size-mismatch', `${path}: tar says ${h.size} bytes, manifest ${f.size}`)
        if (extractedBytes + h.size > limits.maxTotalBytes) bad('total-too-large', `more than ${limits.maxTotalBytes} bytes of files`)
        extractedBytes += h.size
        pending.delete(path)
        done.add(path)
        files.push(await writeVerified(entry, f, dir, signal))
      }
      index++
    }
    if (failure !== undefined) throw failure
    if (manifest === undefined) bad('missing-manifest', 'no signed manifest in the bundle')
    if (pending.size > 0) bad('missing-file', `${pending.size} included files are missing, e.g. ${[...pending.keys()][0]}`)
    await feeder
    if (failure !== undefined) throw failure
  } catch (err) {
    fail(err)
    await rm(dir, { recursive: true, force: true })
    // the first failure is the cause; later ones (a destroyed stream) are its echoes
    throw asBundleError(failure)
  }
  const order = new Map(manifest.files.map((f, i) => [f.path, i]))
  files.sort((a, b) => order.get(a.path)! - order.get(b.path)!)
  return { manifest, files, dir }
}

function asBundleError (err: unknown): Error {
  if (err instanceof BundleError) return err
  if ((err as Error)?.name === 'AbortError') return err as Error
  return new BundleError('malformed-tar', (err as Error)?.message ?? String(err))
}

async function checkManifest (bytes: Buffer, sig: Buffer, opts: UnpackOptions, limits: BundleLimits, now: number, maxAge: number, skew: number): Promise<BundleManifest> {
  // only the origin id is read before the signature is checked: to know whose key to check it with
  let origin: unknown
  try { origin = JSON.parse(bytes.toString('utf8'))?.originSiteId } catch { bad('malformed-manifest', 'not JSON') }
  if (typeof origin !== 'string' || !SITE_ID_RE.test(origin)) bad('malformed-manifest', 'originSiteId')
  const key = await opts.trustedSigners(origin)
  if (key === undefined) bad('untrusted-origin', `${origin} is not a federated site`)
  if (!verifyManifest(bytes, sig, key)) bad('bad-signature', `manifest is not signed by ${origin}`)
  const m = parseManifest(bytes, limits)
  if (m.recipientSiteId !== opts.recipientSiteId) bad('wrong-recipient', `manifest is for ${m.recipientSiteId}`)
  if (m.createdAt < now - maxAge) bad('expired', `created ${new Date(m.createdAt).toISOString()}, older than the ${maxAge} ms accepted`)
  if (m.createdAt > now + skew) bad('expired', `created in the future (${new Date(m.createdAt).toISOString()})`)
  if (await opts.seenNonce(m.originSiteId, m.nonce)) bad('replayed', `nonce ${m.nonce} of ${m.originSiteId} was seen before`)
  return m
}

async function writeVerified (entry: AsyncIterable<Uint8Array>, f: ManifestFile, dir: string, signal: AbortSignal): Promise<UnpackedFile> {
  // named by hash, in a directory we just created: no name from the bundle touches the disk
  const tempPath = join(dir, f.hash)
  const fh = await open(tempPath, constants.O_CREAT | constants.O_EXCL | constants.O_WRONLY | constants.O_NOFOLLOW, 0o600)
  const hash = createHash('sha256')
  let n = 0
  // tar chunks are small; one write per ~1 MiB keeps thread-pool round trips off the hot path,
  // and one write in flight while the next batch is hashed keeps the disk and the decryption overlapped
  let batch: Buffer[] = []
  let batched = 0
  let inflight: Promise<void> = Promise.resolve()
  const flush = async (): Promise<void> => {
    if (batched === 0) return
    const bufs = batch
    batch = []
    batched = 0
    await inflight
    inflight = writeFully(fh, bufs)
    inflight.catch(() => {}) // awaited by the next flush or below
  }
  try {
    for await (const c of entry) {
      signal.throwIfAborted()
      const b = toBuffer(c)
      n += b.byteLength
      if (n > f.size) bad('size-mismatch', `${f.path}: more than ${f.size} bytes`)
      hash.update(b)
      batch.push(b)
      batched += b.byteLength
      if (batched >= WRITE_BATCH) await flush()
    }
    await flush()
    await inflight
  } finally {
    await inflight.catch(() => {})
    await fh.close()
  }
  if (n !== f.size) bad('size-mismatch', `${f.path}: ${n} of ${f.size} bytes`)
  const actual = hash.digest('hex')
  if (actual !== f.hash) bad('hash-mismatch', `${f.path}: content ${actual} is not the signed ${f.hash}`)
  return { path: f.path, hash: f.hash, size: f.size, tempPath }
}
