import { mkdir, open, readFile, rm, stat, writeFile, rename, chmod } from 'node:fs/promises'
import { constants } from 'node:fs'
import { homedir } from 'node:os'
import { join, resolve } from 'node:path'
import { DataDirError, NodeRunningError } from '../node/errors.js'

/** Where every file of a node lives; nothing is written outside it unless asked. */
export interface DataDir {
  root: string
  identityKey: string
  siteSecret: string
  apiToken: string
  apiInfo: string
  lock: string
  config: string
  licenses: string
  db: string
  blobs: string
  outputs: string
  work: string
}

export function defaultDataDir (env: NodeJS.ProcessEnv = process.env): string {
  return env.FARMESH_DATA ?? join(homedir(), '.farmesh')
}

export function dataDirPaths (root: string): DataDir {
  const r = resolve(root)
  return {
    root: r,
    identityKey: join(r, 'identity.key'),
    siteSecret: join(r, 'site.secret'),
    apiToken: join(r, 'api.token'),
    apiInfo: join(r, 'api.json'),
    lock: join(r, 'node.lock'),
    config: join(r, 'config.json'),
    licenses: join(r, 'licenses'),
    db: join(r, 'db'),
    blobs: join(r, 'blobs'),
    outputs: join(r, 'outputs'),
    work: join(r, 'work')
  }
}

/** Create the directory (mode 0700: it holds keys) and check it is usable. */
export async function ensureDataDir (root: string): Promise<DataDir> {
  const dir = dataDirPaths(root)
  try {
    await mkdir(dir.root, { recursive: true, mode: 0o700 })
    const st = await stat(dir.root)
    if (!st.isDirectory()) throw new DataDirError(`data directory ${dir.root} is not a directory`)
    const probe = join(dir.root, `.probe-${process.pid}`)
    await writeFile(probe, '')
    await rm(probe)
  } catch (err: any) {
    if (err.name === 'DataDirError') throw err
    throw new DataDirError(`data directory ${dir.root} is not usable: ${err.code ?? err.message}`)
  }
  return dir
}

function pidAlive (pid: number): boolean {
  try { process.kill(pid, 0); return true } catch (err: any) { return err.code === 'EPERM' }
}

/**
 * One node per data directory: a pid lock file created with O_EXCL. A lock
 * left by a process that died (kill -9, power loss) is taken over.
 */
export async function acquireLock (dir: DataDir): Promise<() => Promise<void>> {
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fh = await open(dir.lock, constants.O_CREAT | constants.O_EXCL | constants.O_WRONLY, 0o600)
      await fh.writeFile(String(process.pid))
      await fh.close()
      return async () => { await rm(dir.lock, { force: true }) }
    } catch (err: any) {
      if (err.code !== 'EEXIST') throw new DataDirError(`cannot lock data directory ${dir.root}: ${err.code ?? err.message}`)
      const pid = Number.parseInt(await readFile(dir.lock, 'utf8').catch(() => ''), 10)
      if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && pidAlive(pid)) {
        throw new NodeRunningError(`another farmesh node (pid ${pid}) is already running on data directory ${dir.root}`)
      }
      await rm(dir.lock, { force: true })
    }
  }
  throw new DataDirError(`cannot lock data directory ${dir.root}`)
}

/** Write a file atomically (temp + rename) so a crash never leaves half a file. */
export async function writeFileAtomic (path: string, data: string | Uint8Array, mode = 0o600): Promise<void> {
  const tmp = `${path}.${process.pid}.tmp`
  await writeFile(tmp, data, { mode })
  await chmod(tmp, mode)
  await rename(tmp, path)
}
