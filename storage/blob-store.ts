import { createHash, randomBytes, type Hash } from 'node:crypto'
import { constants, createReadStream } from 'node:fs'
import { chmod, copyFile, link, mkdir, open, readdir, rename, rm, stat, type FileHandle } from 'node:fs/promises'
import { Writable } from 'node:stream'
import { dirname, join } from 'node:path'

/**
 * Content-addressed files: `<root>/ab/abcdef…` named by their sha256. Every
 * file enters the store through a temp file under `<root>/tmp` that is
 * renamed into place only once its hash and size are verified, so a path in
 * the store always holds exactly the bytes its name promises.
 */

export const BLOB_HASH_RE = /^[0-9a-f]{64}$/

export interface BlobInfo { hash: string, size: number }

export class InvalidBlobHashError extends Error {
  constructor (message = 'blob hash must be 64 lowercase hex characters') { super(message); this.name = 'InvalidBlobHashError' }
}

export class BlobIntegrityError extends Error {
  constructor (message: string) { super(message); this.name = 'BlobIntegrityError' }
}

export class BlobNotFoundError extends Error {
  constructor (hash: string) { super(`blob ${hash} is not in the store`); this.name = 'BlobNotFoundError' }
}

export function isBlobHash (v: unknown): v is string {
  return typeof v === 'string' && BLOB_HASH_RE.test(v)
}

/** Every hash that becomes part of a path passes through here: no `..`, no `/`. */
export function assertBlobHash (v: unknown): string {
  if (!isBlobHash(v)) throw new InvalidBlobHashError()
  return v
}

function tempName (): string {
  return `${randomBytes(12).toString('hex')}.part`
}

/** sha256 and size of a file, streamed. */
export async function hashFile (path: string, signal?: AbortSignal): Promise<BlobInfo> {
  const hash = createHash('sha256')
  let size = 0
  // the signal is checked per chunk rather than handed to the read stream, whose
  // AbortError could surface as an uncaught 'error' between reads
  for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 })) {
    signal?.throwIfAborted()
    hash.update(chunk as Buffer)
    size += (chunk as Buffer).byteLength
  }
  return { hash: hash.digest('hex'), size }
}

function writerOptions (expectedHash: string, expectedSize: number, highWaterMark: number): { highWaterMark: number } {
  assertBlobHash(expectedHash)
  if (!Number.isSafeInteger(expectedSize) || expectedSize < 0) throw new RangeError('expected size must be a non-negative integer')
  return { highWaterMark }
}

/**
 * A writable that hashes and counts what it writes to `tmpPath`; at the end it
 * checks both against the expectation and only then calls `commit(tmpPath)`.
 * On any failure (mismatch, destroy, commit error) the temp file is removed
 * before 'close' is emitted, so awaiting the writer's end leaves no debris.
 * Too many bytes fail at once rather than at the end: a lying peer cannot
 * fill the disk beyond the size it announced.
 */
export class VerifyingWriter extends Writable {
  private fh?: FileHandle
  private readonly hash: Hash = createHash('sha256')
  private written = 0

  constructor (
    readonly tmpPath: string,
    readonly expectedHash: string,
    readonly expectedSize: number,
    private readonly commit: (tmpPath: string) => Promise<void>,
    highWaterMark = 1 << 20
  ) {
    // validate before super(): once constructed, _construct would create the temp file
    super(writerOptions(expectedHash, expectedSize, highWaterMark))
  }

  get bytesWritten (): number { return this.written }

  override _construct (callback: (err?: Error | null) => void): void {
    mkdir(dirname(this.tmpPath), { recursive: true })
      .then(async () => await open(this.tmpPath, constants.O_CREAT | constants.O_EXCL | constants.O_WRONLY, 0o600))
      .then((fh) => { this.fh = fh; callback() }, callback)
  }

  override _writev (chunks: Array<{ chunk: any }>, callback: (err?: Error | null) => void): void {
    const bufs = chunks.map(c => c.chunk as Buffer)
    const n = bufs.reduce((sum, b) => sum + b.byteLength, 0)
    if (this.written + n > this.expectedSize) {
      callback(new BlobIntegrityError(`received more than the expected ${this.expectedSize} bytes`))
      return
    }
    this.written += n
    for (const b of bufs) this.hash.update(b)
    this.writeAll(bufs).then(() => { callback() }, callback)
  }

  private async writeAll (bufs: Buffer[]): Promise<void> {
    await writeFully(this.fh!, bufs)
  }

  override _final (callback: (err?: Error | null) => void): void {
    (async () => {
      if (this.written !== this.expectedSize) throw new BlobIntegrityError(`received ${this.written} of the expected ${this.expectedSize} bytes`)
      const actual = this.hash.digest('hex')
      if (actual !== this.expectedHash) throw new BlobIntegrityError(`content hash ${actual} does not match the expected ${this.expectedHash}`)
      // durable before it becomes visible under its final name
      await this.fh!.sync()
      await this.fh!.close()
      this.fh = undefined
      await this.commit(this.tmpPath)
    })().then(() => { callback() }, callback)
  }

  override _destroy (err: Error | null, callback: (err?: Error | null) => void): void {
    // runs after success too: by then the temp file was renamed or linked away
    const fh = this.fh
    this.fh = undefined;
    (async () => {
      await fh?.close().catch(() => {})
      await rm(this.tmpPath, { force: true })
    })().then(() => { callback(err) }, (rmErr) => { callback(err ?? rmErr) })
  }
}

export class BlobStore {
  private readonly tmpDir: string

  constructor (readonly root: string) {
    this.tmpDir = join(root, 'tmp')
  }

  /** Create the directories and drop temp files a crash left behind. */
  async init (): Promise<void> {
    await mkdir(this.root, { recursive: true, mode: 0o700 })
    await rm(this.tmpDir, { recursive: true, force: true })
    await mkdir(this.tmpDir, { recursive: true, mode: 0o700 })
  }

  path (hash: string): string {
    assertBlobHash(hash)
    return join(this.root, hash.slice(0, 2), hash)
  }

  async has (hash: string): Promise<boolean> {
    try {
      return (await stat(this.path(hash))).isFile()
    } catch (err: any) {
      if (err.code === 'ENOENT') return false
      throw err
    }
  }

  async size (hash: string): Promise<number> {
    try {
      return (await stat(this.path(hash))).size
    } catch (err: any) {
      if (err.code === 'ENOENT') throw new BlobNotFoundError(hash)
      throw err
    }
  }

  /** Copy a file into the store, hashing it on the way (one read pass). */
  async putFile (path: string, options: { signal?: AbortSignal } = {}): Promise<BlobInfo> {
    const tmp = join(this.tmpDir, tempName())
    const hash = createHash('sha256')
    let size = 0
    const out = await open(tmp, constants.O_CREAT | constants.O_EXCL | constants.O_WRONLY, 0o600)
    try {
      try {
        for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 })) {
          options.signal?.throwIfAborted()
          const buf = chunk as Buffer
          hash.update(buf)
          size += buf.byteLength
          let off = 0
          while (off < buf.byteLength) off += (await out.write(buf, off)).bytesWritten
        }
        await out.sync()
      } finally {
        await out.close()
      }
      const info = { hash: hash.digest('hex'), size }
      await this.moveIntoPlace(tmp, info.hash)
      return info
    } finally {
      await rm(tmp, { force: true })
    }
  }

  /**
   * Take in a file whose content is already verified to be `hash` and will
   * not change (e.g. a federation input in its origin's read-only store): a
   * hard link, no copy. Across filesystems it is copied and hashed again.
   */
  async adoptVerified (hash: string, path: string): Promise<void> {
    assertBlobHash(hash)
    if (await this.has(hash)) return
    const tmp = join(this.tmpDir, tempName())
    try {
      await link(path, tmp)
    } catch (err: any) {
      if (!['EXDEV', 'EPERM', 'ENOTSUP', 'EOPNOTSUPP', 'EMLINK', 'EACCES'].includes(err.code)) throw err
      const info = await this.putFile(path)
      if (info.hash !== hash) throw new Error(`${path} is not ${hash}`)
      return
    }
    try {
      await this.moveIntoPlace(tmp, hash)
    } finally {
      await rm(tmp, { force: true })
    }
  }

  /**
   * A writer for a blob we expect to be `expectedHash`/`expectedSize`, e.g.
   * arriving from a peer. It lands in the store only if it verifies.
   */
  createWriter (expectedHash: string, expectedSize: number): VerifyingWriter {
    assertBlobHash(expectedHash)
    return new VerifyingWriter(join(this.tmpDir, tempName()), expectedHash, expectedSize, async (tmp) => { await this.moveIntoPlace(tmp, expectedHash) })
  }

  /**
   * Make the blob appear at `dest`: a hard link when the filesystem allows
   * (free, instant), else a copy. Replaces `dest` atomically. Store files are
   * read-only, so a hard-linked copy cannot be edited in place by accident.
   */
  async materialize (hash: string, dest: string): Promise<void> {
    const src = this.path(hash)
    if (!await this.has(hash)) throw new BlobNotFoundError(hash)
    await mkdir(dirname(dest), { recursive: true })
    const tmp = join(dirname(dest), `.${tempName()}`)
    try {
      try {
        await link(src, tmp)
      } catch (err: any) {
        if (!['EXDEV', 'EPERM', 'ENOTSUP', 'EOPNOTSUPP', 'EMLINK', 'EACCES'].includes(err.code)) throw err
        await copyFile(src, tmp)
      }
      await rename(tmp, dest)
    } finally {
      await rm(tmp, { force: true })
    }
  }

  /** Hashes of everything in the store (for listings and garbage collection). */
  async list (): Promise<string[]> {
    const out: string[] = []
    for (const dir of await readdir(this.root)) {
      if (!/^[0-9a-f]{2}$/.test(dir)) continue
      for (const name of await readdir(join(this.root, dir))) if (isBlobHash(name) && name.startsWith(dir)) out.push(name)
    }
    return out
  }

  private async moveIntoPlace (tmp: string, hash: string): Promise<void> {
    const dest = this.path(hash)
    // dedup: identical content is already there, keep the existing inode
    if (await this.has(hash)) return
    await mkdir(dirname(dest), { recursive: true, mode: 0o700 })
    await chmod(tmp, 0o444)
    await rename(tmp, dest)
  }
}

/** writev may write partially: loop until every byte is on disk. */
export async function writeFully (fh: FileHandle, bufs: Buffer[]): Promise<void> {
  let pending = bufs
  while (pending.length > 0) {
    let skip = (await fh.writev(pending)).bytesWritten
    const rest: Buffer[] = []
    for (const b of pending) {
      if (skip >= b.byteLength) { skip -= b.byteLength; continue }
      rest.push(skip > 0 ? b.subarray(skip) : b)
      skip = 0
    }
    pending = rest
  }
}
