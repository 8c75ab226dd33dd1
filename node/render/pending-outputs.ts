import { mkdir, readdir, readFile, rename, rm, copyFile } from 'node:fs/promises'
import { join } from 'node:path'
import { writeFileAtomic } from '../../storage/data-dir.js'
import type { OutputSink } from './renderer-role.js'
import type { OutputHeader } from '../../protocols/output.js'
import type { Logger } from '../logger.js'

/**
 * Outputs whose origin could not be reached when their frame finished (the
 * origin is switched off, or across a partition). The host keeps them in its
 * data directory and delivers them when the origin is back, so the job can
 * finish without its origin and nothing rendered is lost.
 */
const FLUSH_MS = 5_000

interface Pending { origin: string, header: OutputHeader }

export class PendingOutputs {
  private timer?: NodeJS.Timeout
  private flushing = false

  constructor (private readonly dir: string, private readonly sink: OutputSink, private readonly log: Logger) {}

  start (): void {
    this.timer = setInterval(() => { void this.flush() }, FLUSH_MS)
    this.timer.unref()
    void this.flush()
  }

  stop (): void { if (this.timer != null) clearInterval(this.timer) }

  async keep (origin: string, header: OutputHeader, file: string): Promise<void> {
    const jobDir = join(this.dir, header.jobId)
    await mkdir(jobDir, { recursive: true })
    const dest = join(jobDir, header.name)
    await rename(file, dest).catch(async () => { await copyFile(file, dest) })
    await writeFileAtomic(`${dest}.pending.json`, JSON.stringify({ origin, header } satisfies Pending))
    this.log.info(`origin ${origin} unreachable: keeping ${header.name} of job ${header.jobId} to deliver later`)
  }

  /** Try to deliver everything kept; `origin` limits it to one origin that just came back. */
  async flush (origin?: string): Promise<void> {
    if (this.flushing) return
    this.flushing = true
    try {
      for (const job of await readdir(this.dir).catch(() => [] as string[])) {
        const jobDir = join(this.dir, job)
        for (const meta of (await readdir(jobDir).catch(() => [] as string[])).filter(n => n.endsWith('.pending.json'))) {
          const file = join(jobDir, meta.slice(0, -'.pending.json'.length))
          let p: Pending
          try { p = JSON.parse(await readFile(join(jobDir, meta), 'utf8')) } catch { continue }
          if (origin != null && p.origin !== origin) continue
          try {
            await this.sink(p.origin, p.header, file, AbortSignal.timeout(60_000))
            await rm(join(jobDir, meta), { force: true })
            await rm(file, { force: true })
            this.log.info(`delivered ${p.header.name} of job ${p.header.jobId} to its origin`)
          } catch (err: any) {
            if (err.name === 'OutputRefusedError') {
              // the origin forgot the job: nothing to deliver to
              await rm(join(jobDir, meta), { force: true }); await rm(file, { force: true })
            }
          }
        }
      }
    } finally {
      this.flushing = false
    }
  }
}
