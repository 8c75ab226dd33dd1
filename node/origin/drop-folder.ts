import { mkdir, readdir, rename, stat, writeFile } from 'node:fs/promises'
import { watch, type FSWatcher } from 'node:fs'
import { basename, extname, join } from 'node:path'
import { loadJobSpecFile } from '../jobs/job-spec.js'
import type { Logger } from '../logger.js'

/**
 * The patent's hot folder, for people who never open a terminal: every job
 * spec file (`*.yaml`, `*.yml`, or `*.job.json`: a plain `.json` may be a
 * built-in scene waiting to be named by a spec) that appears in the folder is submitted with the
 * files it names, then moved to `submitted/` — or to `rejected/` next to a
 * `.error.txt` saying why. A file is taken only once its size has stopped
 * changing, so a spec still being copied in is never read half-written.
 */
const SCAN_MS = 2_000
const SETTLE_MS = 300

export class DropFolder {
  private watcher?: FSWatcher
  private timer?: NodeJS.Timeout
  private scanning = false
  private again = false

  constructor (private readonly dir: string, private readonly submit: (spec: unknown) => Promise<{ id: string }>, private readonly log: Logger) {}

  async start (): Promise<void> {
    await mkdir(join(this.dir, 'submitted'), { recursive: true })
    await mkdir(join(this.dir, 'rejected'), { recursive: true })
    // fs.watch reacts at once; the slow rescan catches what it misses (network filesystems)
    this.watcher = watch(this.dir, () => { void this.scan() })
    this.watcher.on('error', () => {})
    this.timer = setInterval(() => { void this.scan() }, SCAN_MS)
    this.timer.unref()
    this.log.info(`watching drop folder ${this.dir}`)
    await this.scan()
  }

  stop (): void {
    this.watcher?.close()
    if (this.timer != null) clearInterval(this.timer)
  }

  async scan (): Promise<void> {
    if (this.scanning) { this.again = true; return }
    this.scanning = true
    try {
      do {
        this.again = false
        const names = await readdir(this.dir).catch(() => [] as string[])
        for (const name of names.filter(isSpecFile).sort()) {
          await this.take(join(this.dir, name))
        }
      } while (this.again)
    } finally {
      this.scanning = false
    }
  }

  private async take (file: string): Promise<void> {
    const before = await stat(file).catch(() => undefined)
    if (before == null || !before.isFile()) return
    await new Promise(resolve => setTimeout(resolve, SETTLE_MS))
    const after = await stat(file).catch(() => undefined)
    if (after == null || after.size !== before.size || after.mtimeMs !== before.mtimeMs) return
    const name = basename(file)
    try {
      const spec = await loadJobSpecFile(file)
      const { id } = await this.submit(spec)
      await rename(file, await freeName(join(this.dir, 'submitted'), name))
      this.log.info(`drop folder: ${name} submitted as job ${id}`)
    } catch (err: any) {
      // the site is still forming: leave the file for the next scan
      if (err.name === 'NoSchedulerError' || err.status === 503) return
      const dest = await freeName(join(this.dir, 'rejected'), name)
      await rename(file, dest).catch(() => {})
      await writeFile(`${dest}.error.txt`, `${err.message}\n`)
      this.log.info(`drop folder: ${name} rejected: ${err.message}`)
    }
  }
}

export function isSpecFile (name: string): boolean {
  const n = name.toLowerCase()
  return !n.startsWith('.') && (n.endsWith('.yaml') || n.endsWith('.yml') || n.endsWith('.job.json'))
}

/** `name`, or `name` with a counter when a file of that name was dropped before. */
async function freeName (dir: string, name: string): Promise<string> {
  const ext = extname(name)
  const stem = name.slice(0, name.length - ext.length)
  for (let i = 0; ; i++) {
    const candidate = join(dir, i === 0 ? name : `${stem}.${i}${ext}`)
    if (await stat(candidate).then(() => false, () => true)) return candidate
  }
}
