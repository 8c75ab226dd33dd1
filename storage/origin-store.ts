import { randomBytes } from 'node:crypto'
import { chmod, mkdir, open, readdir, readFile, rename, rm, stat, utimes, writeFile } from 'node:fs/promises'
import { dirname, join, resolve, sep } from 'node:path'
import { assertBlobHash, BlobStore } from './blob-store.js'
import { isSafeRelativePath, JOB_ID_RE, type BundleManifest, type UnpackedFile } from './bundle.js'
import { SITE_ID_RE } from './site-keys.js'

/**
 * What a remote site keeps for each origin site, isolated from every other
 * origin and from the node's own data:
 *
 *   <root>/<originSiteId>/blobs/            content-addressed inputs (a BlobStore)
 *   <root>/<originSiteId>/jobs/<jobId>/     manifest.json, in/ (read-only inputs), out/
 *   <root>/.intake/                         where bundles are unpacked before they are accepted
 *
 * A blob's mtime is its last use (stored, offered for dedup, or used by a
 * job); `sweep` drops blobs unused for longer than the retention and the
 * directories of finished jobs.
 */

export const DEFAULT_RETENTION_MS = 7 * 24 * 3600_000
const STAGING_PREFIX = '.staging-'
const FINISHED_MARK = 'finished'
const MANIFEST_FILE = 'manifest.json'

export type OriginStoreErrorReason = 'bad-origin' | 'bad-job' | 'bad-path' | 'job-exists' | 'missing-blob' | 'mismatch'

export class OriginStoreError extends Error {
  readonly reason: OriginStoreErrorReason
  constructor (reason: OriginStoreErrorReason, message: string) {
    super(message)
    this.name = 'OriginStoreError'
    this.reason = reason
  }
}

export interface MaterializedInput {
  path: string
  hash: string
  size: number
  original?: string
  /** absolute path of the read-only copy under the job's input directory */
  file: string
}

export interface MaterializedJob {
  originSiteId: string
  jobId: string
  jobDir: string
  inputDir: string
  outputDir: string
  inputs: MaterializedInput[]
  /** ready for bwrapWrap: each input's original absolute path and its copy */
  pathMap: Array<{ original: string, inside: string }>
}

export interface SweepResult { blobsRemoved: number, bytesRemoved: number, jobsRemoved: number }

function checkOrigin (originSiteId: string): string {
  if (typeof originSiteId !== 'string' || !SITE_ID_RE.test(originSiteId)) throw new OriginStoreError('bad-origin', `not a site id: ${String(originSiteId).slice(0, 80)}`)
  return originSiteId
}

function checkJob (jobId: string): string {
  if (typeof jobId !== 'string' || !JOB_ID_RE.test(jobId)) throw new OriginStoreError('bad-job', `not a job id: ${String(jobId).slice(0, 80)}`)
  return jobId
}

async function exists (p: string): Promise<boolean> {
  try { await stat(p); return true } catch (err: any) { if (err.code === 'ENOENT') return false; throw err }
}

async function listDir (p: string): Promise<string[]> {
  try { return await readdir(p) } catch (err: any) { if (err.code === 'ENOENT') return []; throw err }
}

export class OriginStore {
  readonly retentionMs: number
  private readonly now: () => number
  private readonly stores = new Map<string, Promise<BlobStore>>()

  constructor (readonly root: string, opts: { retentionMs?: number, now?: () => number } = {}) {
    this.root = resolve(root)
    this.retentionMs = opts.retentionMs ?? DEFAULT_RETENTION_MS
    this.now = opts.now ?? Date.now
  }

  /** Create the root; drop intake leftovers of a crash (nothing there was ever accepted). */
  async init (): Promise<void> {
    await mkdir(this.root, { recursive: true, mode: 0o700 })
    await rm(this.intakeDir(), { recursive: true, force: true })
    await mkdir(this.intakeDir(), { recursive: true, mode: 0o700 })
  }

  /** The `tempDir` for unpackBundle: same filesystem as the stores, so accepted files are renamed, not copied. */
  intakeDir (): string { return join(this.root, '.intake') }

  originDir (originSiteId: string): string { return join(this.root, checkOrigin(originSiteId)) }
  jobDir (originSiteId: string, jobId: string): string { return join(this.originDir(originSiteId), 'jobs', checkJob(jobId)) }
  inputDir (originSiteId: string, jobId: string): string { return join(this.jobDir(originSiteId, jobId), 'in') }
  outputDir (originSiteId: string, jobId: string): string { return join(this.jobDir(originSiteId, jobId), 'out') }

  async blobs (originSiteId: string): Promise<BlobStore> {
    const dir = join(this.originDir(originSiteId), 'blobs')
    let store = this.stores.get(dir)
    if (store === undefined) {
      store = (async () => {
        await mkdir(this.originDir(originSiteId), { recursive: true, mode: 0o700 })
        const s = new BlobStore(dir)
        await s.init()
        return s
      })()
      this.stores.set(dir, store)
      store.catch(() => this.stores.delete(dir))
    }
    return await store
  }

  /**
   * The hashes this origin's store lacks, for the sender's dedup. The ones it
   * has count as used now, so a sweep does not take them before the bundle comes.
   */
  async missing (originSiteId: string, hashes: string[]): Promise<string[]> {
    const blobs = await this.blobs(originSiteId)
    const out: string[] = []
    for (const h of new Set(hashes.map(x => assertBlobHash(x)))) {
      if (await blobs.has(h)) await this.touch(blobs.path(h))
      else out.push(h)
    }
    return out
  }

  /**
   * Stores a verified bundle's files in the origin's blob store and lays the
   * job out: every manifest file read-only under `in/<path>` (a hard link to
   * its blob), an empty `out/`. Built in a staging directory and renamed into
   * place, so a job directory is complete or absent. Refuses a job id that
   * already exists.
   */
  async materializeJob (originSiteId: string, jobId: string, manifest: BundleManifest, files: UnpackedFile[], signal?: AbortSignal): Promise<MaterializedJob> {
    checkOrigin(originSiteId); checkJob(jobId)
    if (manifest.originSiteId !== originSiteId || manifest.jobId !== jobId) {
      throw new OriginStoreError('mismatch', `manifest is for ${manifest.originSiteId}/${manifest.jobId}`)
    }
    const jobDir = this.jobDir(originSiteId, jobId)
    if (await exists(jobDir)) throw new OriginStoreError('job-exists', `job ${jobId} of ${originSiteId} is already here`)
    const blobs = await this.blobs(originSiteId)

    for (const f of files) {
      signal?.throwIfAborted()
      await this.adopt(blobs, f)
    }
    for (const f of manifest.files) {
      if (!isSafeRelativePath(f.path)) throw new OriginStoreError('bad-path', `unsafe input path ${f.path}`)
      if (!await blobs.has(f.hash)) throw new OriginStoreError('missing-blob', `${f.path}: ${f.hash} was neither sent nor held for ${originSiteId}`)
    }

    const jobsDir = dirname(jobDir)
    await mkdir(jobsDir, { recursive: true, mode: 0o700 })
    const staging = join(jobsDir, `${STAGING_PREFIX}${jobId}-${randomBytes(6).toString('hex')}`)
    const stagingIn = join(staging, 'in')
    try {
      await mkdir(stagingIn, { recursive: true, mode: 0o755 })
      await mkdir(join(staging, 'out'), { mode: 0o755 })
      for (const f of manifest.files) {
        signal?.throwIfAborted()
        const dest = join(stagingIn, f.path)
        // validated above; this only guards against a future change to that check
        if (!dest.startsWith(stagingIn + sep)) throw new OriginStoreError('bad-path', `input path ${f.path} leaves the job`)
        await blobs.materialize(f.hash, dest)
        await this.touch(blobs.path(f.hash))
      }
      await writeFile(join(staging, MANIFEST_FILE), JSON.stringify(manifest), { mode: 0o600, flag: 'wx' })
      await rename(staging, jobDir)
    } catch (err: any) {
      await rm(staging, { recursive: true, force: true })
      if (err.code === 'ENOTEMPTY' || err.code === 'EEXIST') throw new OriginStoreError('job-exists', `job ${jobId} of ${originSiteId} is already here`)
      throw err
    }

    const inputDir = join(jobDir, 'in')
    const inputs = manifest.files.map((f): MaterializedInput => ({
      path: f.path, hash: f.hash, size: f.size, ...(f.original !== undefined ? { original: f.original } : {}), file: join(inputDir, f.path)
    }))
    return {
      originSiteId,
      jobId,
      jobDir,
      inputDir,
      outputDir: join(jobDir, 'out'),
      inputs,
      pathMap: inputs.filter(i => i.original !== undefined).map(i => ({ original: i.original!, inside: i.file }))
    }
  }

  /** Bytes of inputs held for this origin (its blob store; job directories are hard links to it). */
  async usage (originSiteId: string): Promise<number> {
    const dir = join(this.originDir(originSiteId), 'blobs')
    if (!await exists(dir)) return 0
    const blobs = await this.blobs(originSiteId)
    let total = 0
    for (const hash of await blobs.list()) total += (await stat(blobs.path(hash)).catch(() => undefined))?.size ?? 0
    return total
  }

  /** The job's outputs were delivered: its directory may go at the next sweep. */
  async markFinished (originSiteId: string, jobId: string): Promise<void> {
    const dir = this.jobDir(originSiteId, jobId)
    if (!await exists(dir)) return
    await writeFile(join(dir, FINISHED_MARK), String(this.now()), { mode: 0o600 })
  }

  async removeJob (originSiteId: string, jobId: string): Promise<void> {
    await rm(this.jobDir(originSiteId, jobId), { recursive: true, force: true })
  }

  async origins (): Promise<string[]> {
    return (await listDir(this.root)).filter(n => SITE_ID_RE.test(n))
  }

  async jobs (originSiteId: string): Promise<string[]> {
    return (await listDir(join(this.originDir(originSiteId), 'jobs'))).filter(n => JOB_ID_RE.test(n))
  }

  /**
   * Removes finished jobs' directories, staging leftovers, and blobs unused
   * for `olderThanMs` that no unfinished job refers to.
   */
  async sweep (olderThanMs = this.retentionMs, signal?: AbortSignal): Promise<SweepResult> {
    const result: SweepResult = { blobsRemoved: 0, bytesRemoved: 0, jobsRemoved: 0 }
    const cutoff = this.now() - olderThanMs
    for (const origin of await this.origins()) {
      signal?.throwIfAborted()
      const jobsDir = join(this.originDir(origin), 'jobs')
      const keep = new Set<string>()
      for (const name of await listDir(jobsDir)) {
        const dir = join(jobsDir, name)
        if (name.startsWith(STAGING_PREFIX)) {
          // a materialize in progress is seconds old; an hour-old one was interrupted
          const st = await stat(dir).catch(() => undefined)
          if (st !== undefined && st.mtimeMs < this.now() - 3600_000) await rm(dir, { recursive: true, force: true })
          continue
        }
        if (!JOB_ID_RE.test(name)) continue
        if (await exists(join(dir, FINISHED_MARK))) {
          await rm(dir, { recursive: true, force: true })
          result.jobsRemoved++
          continue
        }
        try {
          const m = JSON.parse(await readFile(join(dir, MANIFEST_FILE), 'utf8')) as BundleManifest
          for (const f of m.files) keep.add(f.hash)
        } catch {} // unreadable manifest: its inputs are hard links and survive their blobs anyway
      }
      const blobs = await this.blobs(origin)
      for (const hash of await blobs.list()) {
        if (keep.has(hash)) continue
        const p = blobs.path(hash)
        const st = await stat(p).catch(() => undefined)
        if (st === undefined || st.mtimeMs >= cutoff) continue
        await rm(p, { force: true })
        result.blobsRemoved++
        result.bytesRemoved += st.size
      }
    }
    return result
  }

  private async touch (p: string): Promise<void> {
    const t = new Date(this.now())
    await utimes(p, t, t).catch(() => {}) // best effort: a missed touch only makes a blob expire sooner
  }

  /** Moves a verified unpacked file into the blob store (a rename on the same filesystem). */
  private async adopt (blobs: BlobStore, f: UnpackedFile): Promise<void> {
    assertBlobHash(f.hash)
    if (await blobs.has(f.hash)) { await this.touch(blobs.path(f.hash)); return }
    // durable before it is visible under its hash, as BlobStore does
    const fh = await open(f.tempPath, 'r')
    try { await fh.sync() } finally { await fh.close() }
    const dest = blobs.path(f.hash)
    await mkdir(dirname(dest), { recursive: true, mode: 0o700 })
    await chmod(f.tempPath, 0o444)
    try {
      await rename(f.tempPath, dest)
    } catch (err: any) {
      if (err.code !== 'EXDEV') throw err
      // intake on another filesystem: copy (BlobStore hashes it again on the way)
      const info = await blobs.putFile(f.tempPath)
      if (info.hash !== f.hash) throw new OriginStoreError('mismatch', `${f.path} changed in the intake directory`)
    }
    await this.touch(dest)
  }
}
