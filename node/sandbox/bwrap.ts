/**
 * The sandbox every remote frame runs in (the patent's I/O wrapper, made
 * stronger): bubblewrap gives the renderer a new root holding only
 *
 *   - system directories, read-only (not /etc: only the few files renderers need)
 *   - its own job directory: inputs read-only, outputs writable
 *   - each input's original absolute path, resolving to the bundle's copy
 *   - a private /tmp (size-capped tmpfs), /proc of its own PID namespace, a minimal /dev
 *
 * and no network (empty network namespace), no capabilities, no nested user
 * namespaces, a new session (no terminal injection), killed with its parent
 * (and, as PID 1 of its namespace, taking everything it started with it).
 * The root itself is remounted read-only, so nothing written outside the
 * output directory or /tmp survives, and /tmp dies with the sandbox.
 */
import { execFile } from 'node:child_process'
import { existsSync, lstatSync, readFileSync, readlinkSync, realpathSync, statSync } from 'node:fs'
import { lstat, realpath } from 'node:fs/promises'
import { dirname, isAbsolute, join, resolve, sep } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { CommandLine } from '../renderers/adapter.js'
import { isSafeOriginalPath } from '../../storage/bundle.js'

export class SandboxError extends Error {
  constructor (message: string) { super(message); this.name = 'SandboxError' }
}

/**
 * What the renderers and the dynamic loader need of the host, and nothing
 * more; a missing one is skipped. Top-level symlinks (merged /usr) are
 * recreated as symlinks.
 */
export const DEFAULT_SYSTEM_PATHS = [
  '/usr', '/bin', '/sbin', '/lib', '/lib32', '/lib64', '/libx32',
  '/etc/alternatives', '/etc/ld.so.cache', '/etc/ld.so.conf', '/etc/ld.so.conf.d', '/etc/localtime',
  '/etc/fonts', '/etc/povray'
]

const SANDBOX_HOME = '/tmp/home'
const SANDBOX_PATH = '/usr/local/bin:/usr/bin:/bin'
const DEFAULT_TMP_BYTES = 1024 * 1024 * 1024
const ENV_NAME_RE = /^[A-Za-z_][A-Za-z0-9_]*$/

export interface PathMapping {
  /** absolute path the scene refers to (as on the submitting host) */
  original: string
  /** the bundle's copy of it, under inputDir */
  inside: string
}

export interface BwrapOptions {
  jobDir: string
  inputDir: string
  outputDir: string
  pathMap?: PathMapping[]
  /** more read-only paths: renderer installs, farmesh's own code (see farmeshInstallPaths) */
  allowRead?: string[]
  /** replaces DEFAULT_SYSTEM_PATHS */
  systemPaths?: string[]
  /**
   * Paths that must stay invisible, e.g. the node's data directory: a
   * read-only path that contains or lies inside one is refused. (The job's
   * own directory is inside the data directory; it is the one exception.)
   */
  hidden?: string[]
  /** bind the running Node binary read-only (the builtin renderer needs it). Default true */
  includeNode?: boolean
  /** size cap of the private /tmp (RAM-backed). Default 1 GiB */
  tmpBytes?: number
  /** block user namespaces inside the sandbox (needs a bwrap that can create one). Default true */
  disableUserns?: boolean
  bwrapPath?: string
}

function within (child: string, parent: string): boolean {
  return child === parent || parent === '/' || child.startsWith(parent.endsWith(sep) ? parent : parent + sep)
}

function real (p: string, what: string): string {
  if (!isAbsolute(p)) throw new SandboxError(`${what} must be an absolute path: ${p}`)
  try {
    return realpathSync(p)
  } catch (err: any) {
    throw new SandboxError(`${what} ${p}: ${err.code ?? err.message}`)
  }
}

/**
 * A `runTask` wrap that runs the command inside bubblewrap. Everything is
 * checked when the wrap is built, so a bad mapping fails before any process
 * starts.
 */
export function bwrapWrap (opts: BwrapOptions): (cmd: CommandLine) => CommandLine {
  const jobDir = resolve(opts.jobDir)
  const inputDir = resolve(opts.inputDir)
  const outputDir = resolve(opts.outputDir)
  const jobReal = real(jobDir, 'job directory')
  const inputReal = real(inputDir, 'input directory')
  const outputReal = real(outputDir, 'output directory')
  const hidden = (opts.hidden ?? []).map(h => existsSync(h) ? realpathSync(h) : resolve(h))

  const mounts: string[] = [] // every path we mount something on, to keep mappings off them
  const args: string[] = [
    '--unshare-all', // user (if possible), ipc, pid, net, uts, cgroup
    ...(opts.disableUserns !== false ? ['--unshare-user', '--disable-userns'] : []),
    '--die-with-parent',
    // no bwrap init in between: the renderer is reaped by bwrap itself, so its CPU
    // time reaches our rusage (with an init it is lost, and billing under-counts)
    '--as-pid-1',
    '--new-session',
    '--cap-drop', 'ALL',
    '--clearenv',
    '--setenv', 'PATH', SANDBOX_PATH,
    '--setenv', 'HOME', SANDBOX_HOME,
    '--setenv', 'TMPDIR', '/tmp',
    '--setenv', 'LANG', 'C.UTF-8'
  ]

  const checkHidden = (p: string, what: string): void => {
    for (const h of hidden) {
      if (within(p, h) || within(h, p)) throw new SandboxError(`${what} ${p} would expose ${h}, which must stay hidden`)
    }
  }

  // /tmp first: anything bound below it later (farmesh itself, installed under /tmp in a CI
  // checkout; a job directory) lands on top of the private tmpfs instead of being hidden by it
  const tmpBytes = opts.tmpBytes ?? DEFAULT_TMP_BYTES
  if (!Number.isSafeInteger(tmpBytes) || tmpBytes <= 0) throw new SandboxError('tmpBytes must be a positive integer')
  args.push('--proc', '/proc', '--dev', '/dev', '--size', String(tmpBytes), '--tmpfs', '/tmp', '--dir', SANDBOX_HOME)

  for (const p of opts.systemPaths ?? DEFAULT_SYSTEM_PATHS) {
    let st
    try { st = lstatSync(p) } catch { continue }
    mounts.push(p)
    if (st.isSymbolicLink()) {
      args.push('--symlink', readlinkSync(p), p)
    } else {
      checkHidden(realpathSync(p), 'system path')
      args.push('--ro-bind', p, p)
    }
  }
  const readable = (p: string): boolean => mounts.some(m => within(p, m) && !lstatSync(m).isSymbolicLink())
  for (const p of opts.allowRead ?? []) {
    const r = real(p, 'read-only path')
    checkHidden(r, 'read-only path')
    args.push('--ro-bind', r, resolve(p))
    mounts.push(resolve(p))
  }
  if (opts.includeNode !== false) {
    // the node binary may live under ~/.nvm or /opt: bind the file itself, at its real path and its called path
    const exe = process.execPath
    const exeReal = realpathSync(exe)
    if (!readable(exeReal) && !mounts.includes(exeReal)) { args.push('--ro-bind', exeReal, exeReal); mounts.push(exeReal) }
    if (!readable(exe) && !mounts.includes(exe)) { args.push('--ro-bind', exeReal, exe); mounts.push(exe) }
  }

  mounts.push('/proc', '/dev', SANDBOX_HOME)

  // the job's own store: the directory read-only, then inputs read-only and outputs writable on top
  args.push('--ro-bind', jobReal, jobDir, '--ro-bind', inputReal, inputDir, '--bind', outputReal, outputDir)
  mounts.push(jobDir, inputDir, outputDir)

  const seen = new Set<string>()
  const originals = (opts.pathMap ?? []).map(m => m.original)
  for (const m of opts.pathMap ?? []) {
    if (!isSafeOriginalPath(m.original)) throw new SandboxError(`path mapping: ${JSON.stringify(m.original).slice(0, 200)} is not a normalized absolute path`)
    if (seen.has(m.original)) throw new SandboxError(`path mapping: ${m.original} is mapped twice`)
    seen.add(m.original)
    if (originals.some(o => o !== m.original && within(o, m.original))) throw new SandboxError(`path mapping: ${m.original} is a file and a directory`)
    // a mapping may not cover, or sit inside, anything mounted: it would hide it or need a write to a read-only mount
    for (const mp of mounts) {
      if (within(m.original, mp) || within(mp, m.original)) throw new SandboxError(`path mapping: ${m.original} collides with ${mp}`)
    }
    if (m.original === '/tmp') throw new SandboxError('path mapping: /tmp cannot be a file')
    const r = real(resolve(m.inside), 'path mapping source')
    // the copy must really be the job's: never a way to bind any host file into the sandbox
    if (!within(r, inputReal) || r === inputReal) throw new SandboxError(`path mapping: ${m.inside} is not inside the job's inputs`)
    if (!statSync(r).isFile()) throw new SandboxError(`path mapping: ${m.inside} is not a regular file`)
    args.push('--ro-bind', r, m.original)
  }
  args.push('--remount-ro', '/')
  const bwrap = opts.bwrapPath ?? 'bwrap'

  return (cmd: CommandLine): CommandLine => {
    const env: string[] = []
    for (const [k, v] of Object.entries(cmd.env ?? {})) {
      if (!ENV_NAME_RE.test(k) || v.includes('\0')) throw new SandboxError(`environment variable ${JSON.stringify(k)} cannot be passed into the sandbox`)
      env.push('--setenv', k, v)
    }
    const cwd = resolve(cmd.cwd)
    const inside = [jobDir, inputDir, outputDir].some(d => within(cwd, d))
    return {
      file: bwrap,
      args: [...args, ...env, '--chdir', inside ? cwd : jobDir, '--', cmd.file, ...cmd.args],
      // bwrap itself starts in the host's job directory; the child's env is only what --setenv gave it
      cwd: jobReal
    }
  }
}

// ---------------------------------------------------------------- collecting outputs

export interface OutputCheck {
  accepted: string[]
  refused: Array<{ path: string, reason: string }>
}

/**
 * Which of a sandboxed task's outputs may leave the host. The job controls
 * its output directory: an "output" that is a symlink (or sits under a
 * symlinked directory) to the node's keys would otherwise be read by the
 * node, outside the sandbox, and sent to the origin. Only regular files
 * with one link, really inside `outputDir`, pass. Call it after the task
 * ended (its PID namespace is gone, so nothing can swap a file afterwards)
 * and still open accepted files with O_NOFOLLOW.
 */
export async function checkSandboxOutputs (outputDir: string, paths: string[]): Promise<OutputCheck> {
  const out: OutputCheck = { accepted: [], refused: [] }
  const root = await realpath(outputDir)
  for (const p of paths) {
    const abs = resolve(p)
    let reason: string | undefined
    if (!within(abs, resolve(outputDir)) || abs === resolve(outputDir)) {
      reason = 'outside the output directory'
    } else {
      try {
        const parent = await realpath(dirname(abs))
        const st = await lstat(abs)
        if (!within(parent, root)) reason = 'under a link leading out of the output directory'
        else if (st.isSymbolicLink()) reason = 'a symbolic link'
        else if (!st.isFile()) reason = 'not a regular file'
        else if (st.nlink !== 1) reason = 'a hard link'
      } catch (err: any) {
        reason = `unreadable (${err.code ?? err.message})`
      }
    }
    if (reason === undefined) out.accepted.push(p)
    else out.refused.push({ path: p, reason })
  }
  return out
}

// ---------------------------------------------------------------- availability and policy

export interface SandboxStatus {
  available: boolean
  /** bwrap can also create a user namespace (for --disable-userns) */
  userns: boolean
  version?: string
  /** why it is unavailable */
  reason?: string
}

const statusCache = new Map<string, Promise<SandboxStatus>>()

function run (file: string, args: string[], signal?: AbortSignal): Promise<{ ok: boolean, out: string }> {
  return new Promise(resolve => {
    execFile(file, args, { timeout: 10_000, signal, encoding: 'utf8' }, (err, stdout, stderr) => {
      resolve({ ok: err === null, out: err === null ? stdout.trim() : ((err as any).code === 'ENOENT' ? 'not installed' : (stderr.trim() || err.message)) })
    })
  })
}

/**
 * Whether bubblewrap is installed and can build our sandbox here (containers
 * often forbid the namespaces it needs). Probed once per bwrap path.
 */
export async function sandboxStatus (opts: { bwrapPath?: string, signal?: AbortSignal, refresh?: boolean } = {}): Promise<SandboxStatus> {
  const bwrap = opts.bwrapPath ?? 'bwrap'
  if (opts.refresh === true) statusCache.delete(bwrap)
  let status = statusCache.get(bwrap)
  if (status === undefined) {
    status = (async (): Promise<SandboxStatus> => {
      const probe = ['--unshare-all', '--die-with-parent', '--new-session', '--cap-drop', 'ALL', '--ro-bind', '/', '/', '--proc', '/proc', '--dev', '/dev', '--tmpfs', '/tmp']
      const version = await run(bwrap, ['--version'], opts.signal)
      if (!version.ok) return { available: false, userns: false, reason: `bwrap: ${version.out}` }
      const base = await run(bwrap, [...probe, 'true'], opts.signal)
      if (!base.ok) return { available: false, userns: false, version: version.out, reason: `bwrap cannot create a sandbox here: ${base.out}` }
      const userns = await run(bwrap, ['--unshare-user', '--disable-userns', ...probe, 'true'], opts.signal)
      return { available: true, userns: userns.ok, version: version.out }
    })()
    statusCache.set(bwrap, status)
    // an aborted probe says nothing about bwrap: don't remember it
    status.then(s => { if (opts.signal?.aborted === true && !s.available) statusCache.delete(bwrap) }, () => statusCache.delete(bwrap))
  }
  return await status
}

export async function sandboxAvailable (opts: { bwrapPath?: string, signal?: AbortSignal } = {}): Promise<boolean> {
  return (await sandboxStatus(opts)).available
}

/** Only an explicit `true` (the operator's --allow-unsandboxed) lets remote work run unsandboxed. */
export function unsandboxedAllowed (flag: unknown): boolean {
  return flag === true
}

export type RemoteRunMode = 'sandbox' | 'unsandboxed' | 'refuse'

/** How a remote job may run on this node. */
export function remoteRunMode (sandboxIsAvailable: boolean, allowUnsandboxed: unknown): RemoteRunMode {
  if (sandboxIsAvailable) return 'sandbox'
  return unsandboxedAllowed(allowUnsandboxed) ? 'unsandboxed' : 'refuse'
}

/**
 * What the builtin renderer needs of farmesh's own install inside the
 * sandbox: compiled code, its dependencies, and package.json (which makes
 * the .js files ES modules). Found from this module's location.
 */
export function farmeshInstallPaths (from = dirname(fileURLToPath(import.meta.url))): string[] {
  let dir = from
  for (;;) {
    const pkg = join(dir, 'package.json')
    try {
      if (JSON.parse(readFileSync(pkg, 'utf8')).name === 'farmesh') {
        return [join(dir, 'dist'), join(dir, 'node_modules'), pkg].filter(p => existsSync(p))
      }
    } catch {}
    const up = dirname(dir)
    if (up === dir) return []
    dir = up
  }
}
