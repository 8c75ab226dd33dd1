/**
 * Shared helpers for the benchmarks: process bookkeeping (everything we
 * start is stopped at the end, on failure and on SIGINT/SIGTERM too),
 * `farmesh start` on loopback, the node's HTTP API, /proc readings,
 * statistics and the result blocks every benchmark prints.
 *
 * Benchmarks report; they never fail the build.
 */
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..')
export const CLI = join(REPO_ROOT, 'dist', 'cli', 'main.js')
export const BENCH_DIST = dirname(fileURLToPath(import.meta.url))

export const sleep = async (ms: number): Promise<void> => { await new Promise(resolve => setTimeout(resolve, ms)) }

// ---------------------------------------------------------------- results

export type TargetOp = '<=' | '<' | '>=' | '>'

export interface Figure {
  label: string
  /** null: not measured (failed / timed out) */
  value: number | null
  unit: string
  target?: { op: TargetOp, value: number }
  /** the figure the summary table shows for this benchmark */
  headline?: boolean
  /** digits after the point (default: by magnitude) */
  digits?: number
}

export interface BenchResult {
  name: string
  title: string
  figures: Figure[]
  notes: string[]
  error?: string
}

export interface BenchOptions {
  quick: boolean
  /** print progress lines */
  log: (line: string) => void
}

export interface Bench {
  name: string
  aliases: string[]
  title: string
  run: (o: BenchOptions) => Promise<BenchResult>
}

export function verdict (f: Figure): 'PASS' | 'MISS' | '' {
  if (f.target == null) return ''
  if (f.value == null || !Number.isFinite(f.value)) return 'MISS'
  const { op, value } = f.target
  const ok = op === '<=' ? f.value <= value : op === '<' ? f.value < value : op === '>=' ? f.value >= value : f.value > value
  return ok ? 'PASS' : 'MISS'
}

export function fmt (v: number | null, digits?: number): string {
  if (v == null || !Number.isFinite(v)) return 'n/a'
  const a = Math.abs(v)
  if (digits != null) return digits === 0 && a >= 10_000 ? Math.round(v).toLocaleString('en-US') : v.toFixed(digits)
  if (a >= 1000) return Math.round(v).toLocaleString('en-US')
  if (a >= 100) return v.toFixed(0)
  if (a >= 10) return v.toFixed(1)
  if (a >= 1) return v.toFixed(2)
  return v.toFixed(3)
}

const OP_TEXT: Record<TargetOp, string> = { '<=': '≤', '<': '<', '>=': '≥', '>': '>' }

export function targetText (f: Figure): string {
  if (f.target == null) return ''
  return `${OP_TEXT[f.target.op]} ${fmt(f.target.value, f.digits)} ${f.unit}`.trim()
}

export function printResult (r: BenchResult, print: (s: string) => void = console.log): void {
  const bar = '='.repeat(Math.max(10, 78 - r.title.length - 4))
  print('')
  print(`== ${r.title} ${bar}`)
  if (r.error != null) print(`  ERROR: ${r.error}`)
  const w = Math.max(20, ...r.figures.map(f => f.label.length))
  for (const f of r.figures) {
    const value = `${fmt(f.value, f.digits)} ${f.unit}`.padEnd(16)
    const target = f.target != null ? `target ${targetText(f)}`.padEnd(22) : ''.padEnd(22)
    print(`  ${f.label.padEnd(w)}  ${value}  ${target}  ${verdict(f)}`.trimEnd())
  }
  for (const n of r.notes) print(`  note: ${n}`)
}

// ---------------------------------------------------------------- statistics

export function quantile (xs: number[], q: number): number | null {
  if (xs.length === 0) return null
  const s = [...xs].sort((a, b) => a - b)
  const pos = (s.length - 1) * q
  const lo = Math.floor(pos)
  const hi = Math.ceil(pos)
  return s[lo] + (s[hi] - s[lo]) * (pos - lo)
}
export const median = (xs: number[]): number | null => quantile(xs, 0.5)
export const maxOf = (xs: number[]): number | null => xs.length === 0 ? null : Math.max(...xs)
export const minOf = (xs: number[]): number | null => xs.length === 0 ? null : Math.min(...xs)
export const mean = (xs: number[]): number | null => xs.length === 0 ? null : xs.reduce((a, b) => a + b, 0) / xs.length

// ---------------------------------------------------------------- cleanup

/** Process groups of every detached child we started (pgid = child pid). */
const groups = new Set<number>()
/** Synchronous last-resort cleanups (namespaces, temp dirs), newest last. */
const syncCleanups = new Map<string, () => void>()
let hooksInstalled = false

function killGroup (pgid: number, sig: NodeJS.Signals): void {
  try { process.kill(-pgid, sig) } catch {}
}

export function groupAlive (pgid: number): boolean {
  try { process.kill(-pgid, 0); return true } catch (err: any) { return err.code === 'EPERM' }
}

function sleepSync (ms: number): void { Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms) }

/**
 * Kill everything still running and run every registered cleanup. Safe to
 * call twice. `graceMs` > 0: SIGTERM first (nodes leave their site and stop
 * their render processes), SIGKILL what is left after that long.
 */
export function cleanupSync (graceMs = 0): void {
  if (graceMs > 0 && groups.size > 0) {
    for (const pgid of groups) { try { process.kill(pgid, 'SIGTERM') } catch {} }
    const end = Date.now() + graceMs
    while (Date.now() < end && [...groups].some(groupAlive)) sleepSync(50)
  }
  for (const pgid of groups) killGroup(pgid, 'SIGKILL')
  groups.clear()
  for (const [key, fn] of [...syncCleanups].reverse()) {
    try { fn() } catch {}
    syncCleanups.delete(key)
  }
}

export function installCleanupHooks (): void {
  if (hooksInstalled) return
  hooksInstalled = true
  process.on('exit', () => { cleanupSync() })
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.on(sig, () => {
      console.error(`\nbench: ${sig}: stopping everything this run started…`)
      cleanupSync(3_000)
      process.exit(130)
    })
  }
}

export function onCleanup (key: string, fn: () => void): void { syncCleanups.set(key, fn) }
export function offCleanup (key: string): void { syncCleanups.delete(key) }

/** A temp dir removed at the end of the run (also on failure). */
export function tempDir (prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), `farmesh-bench-${prefix}-`))
  onCleanup(`dir:${dir}`, () => { rmSync(dir, { recursive: true, force: true }) })
  return dir
}

export function removeTempDir (dir: string): void {
  rmSync(dir, { recursive: true, force: true })
  offCleanup(`dir:${dir}`)
}

/** Environment for children: no FARMESH_* settings from the caller's shell leak in. */
export function cleanEnv (extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {}
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('FARMESH_')) env[k] = v
  return { ...env, ...extra }
}

export interface Tracked {
  proc: ChildProcess
  pid: number
  /** last lines of stdout+stderr */
  tail: string[]
  exited: Promise<{ code: number | null, signal: NodeJS.Signals | null }>
  running: () => boolean
}

/** Spawn detached (own process group) and remember it for cleanup. */
export function spawnTracked (cmd: string, args: string[], opts: SpawnOptions = {}): Tracked {
  installCleanupHooks()
  const proc = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: cleanEnv(), ...opts, detached: true })
  const pid = proc.pid ?? -1
  if (pid > 0) groups.add(pid)
  const tail: string[] = []
  const keep = (b: Buffer): void => {
    tail.push(...b.toString().split('\n').filter(Boolean))
    if (tail.length > 40) tail.splice(0, tail.length - 40)
  }
  proc.stderr?.on('data', keep)
  let done = false
  const exited = new Promise<{ code: number | null, signal: NodeJS.Signals | null }>(resolve => {
    proc.once('error', (err) => { tail.push(`spawn failed: ${err.message}`); done = true; resolve({ code: null, signal: null }) })
    proc.once('exit', (code, signal) => {
      done = true
      // forget the group once it is empty, so a recycled pid is never killed later
      if (pid > 0 && !groupAlive(pid)) groups.delete(pid)
      resolve({ code, signal })
    })
  })
  return { proc, pid, tail, exited, running: () => !done }
}

/** SIGTERM (a clean leave), then SIGKILL of the whole group after `graceMs`. */
export async function stopTracked (t: Tracked, graceMs = 8_000): Promise<{ ms: number, killed: boolean }> {
  const t0 = Date.now()
  let killed = false
  if (t.running()) {
    try { process.kill(t.pid, 'SIGTERM') } catch {}
    const timer = setTimeout(() => { killed = true; killGroup(t.pid, 'SIGKILL') }, graceMs)
    await t.exited
    clearTimeout(timer)
  }
  // leftovers of the group (render children) go too
  if (t.pid > 0 && groupAlive(t.pid)) killGroup(t.pid, 'SIGKILL')
  groups.delete(t.pid)
  return { ms: Date.now() - t0, killed }
}

// ---------------------------------------------------------------- nodes on loopback

export interface ApiInfo { url: string, token: string, pid: number, peerId: string }

export async function readApiInfo (dataDir: string): Promise<ApiInfo> {
  const info = JSON.parse(await readFile(join(dataDir, 'api.json'), 'utf8'))
  const token = (await readFile(join(dataDir, 'api.token'), 'utf8')).trim()
  return { url: info.url, token, pid: info.pid, peerId: info.peerId }
}

export class ApiError extends Error {
  constructor (message: string, readonly status: number) { super(message); this.name = 'ApiError' }
}

export async function api<T = any> (info: { url: string, token: string }, method: string, path: string, body?: unknown, timeoutMs = 10_000): Promise<T> {
  const res = await fetch(info.url + path, {
    method,
    headers: { authorization: `Bearer ${info.token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(timeoutMs)
  })
  const text = await res.text()
  let parsed: any
  try { parsed = text === '' ? undefined : JSON.parse(text) } catch { parsed = { error: text } }
  if (!res.ok) throw new ApiError(`${method} ${path}: ${parsed?.error ?? `HTTP ${res.status}`}`, res.status)
  return parsed as T
}

export interface LocalNode extends Tracked {
  data: string
  spawnedAt: number
  info?: ApiInfo
}

export interface LocalNodeOptions {
  site: string
  slots: number
  peers?: string[]
  data?: string
  extra?: string[]
  /** keep the node's info log (its tail shows in notes); default: --quiet */
  verbose?: boolean
}

/** `farmesh start` on loopback: never mDNS, explicit peers only. */
export function startLocalNode (o: LocalNodeOptions): LocalNode {
  const data = o.data ?? tempDir('node')
  const args = [CLI, 'start', '--data', data, '--site', o.site, '--no-mdns', '--listen', '/ip4/127.0.0.1/tcp/0', '--api', '127.0.0.1:0', '--slots', String(o.slots), ...(o.verbose === true ? [] : ['--quiet'])]
  for (const p of o.peers ?? []) args.push('--peer', p)
  args.push(...(o.extra ?? []))
  const spawnedAt = Date.now()
  const t = spawnTracked(process.execPath, args, { cwd: REPO_ROOT })
  t.proc.stdout?.resume()
  return { ...t, data, spawnedAt }
}

/** Waits until api.json names this process and GET /v1/status answers. */
export async function waitApi (node: LocalNode, timeoutMs = 30_000): Promise<ApiInfo> {
  const end = Date.now() + timeoutMs
  let last = ''
  while (Date.now() < end) {
    if (!node.running()) throw new Error(`node on ${node.data} exited before its API answered: ${node.tail.slice(-5).join(' / ')}`)
    try {
      const info = await readApiInfo(node.data)
      if (info.pid === node.pid) {
        await api(info, 'GET', '/v1/status', undefined, 2_000)
        node.info = info
        return info
      }
    } catch (err: any) { last = err.message }
    await sleep(25)
  }
  throw new Error(`node on ${node.data}: API not up after ${timeoutMs} ms (${last})`)
}

export async function waitFor<T> (what: string, fn: () => Promise<T | undefined | false>, timeoutMs: number, everyMs = 50): Promise<T> {
  const end = Date.now() + timeoutMs
  let lastErr = ''
  while (Date.now() < end) {
    try {
      const v = await fn()
      if (v !== undefined && v !== false) return v
    } catch (err: any) { lastErr = err.message }
    await sleep(everyMs)
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${lastErr !== '' ? ` (${lastErr})` : ''}`)
}

/**
 * A site of `count` nodes on loopback: the first one bootstraps, the others
 * name it with --peer. Resolves once every node lists every host.
 */
export async function startLocalSite (o: { count: number, slots: number, site?: string, log?: (s: string) => void }): Promise<{ site: string, nodes: LocalNode[], infos: ApiInfo[] }> {
  const site = o.site ?? `bench-${process.pid}-${Math.random().toString(36).slice(2, 8)}`
  const first = startLocalNode({ site, slots: o.slots })
  const nodes = [first]
  try {
    const firstInfo = await waitApi(first)
    const status = await api(firstInfo, 'GET', '/v1/status')
    const addr = (status.addresses as string[]).find(a => a.startsWith('/ip4/127.0.0.1/')) ?? status.addresses[0]
    for (let i = 1; i < o.count; i++) nodes.push(startLocalNode({ site, slots: o.slots, peers: [addr] }))
    const infos = [firstInfo, ...await Promise.all(nodes.slice(1).map(async n => await waitApi(n)))]
    await waitFor('every node to list every host', async () => {
      const tables = await Promise.all(infos.map(async i => await api<any[]>(i, 'GET', '/v1/hosts')))
      return tables.every(t => t.length === o.count)
    }, 30_000)
    // and agree on a scheduler (elected: it can take a moment after the tables are complete)
    const scheduler = await waitFor('the nodes to agree on a scheduler', async () => {
      const ids = await Promise.all(infos.map(async i => (await api(i, 'GET', '/v1/status')).scheduler as string | null))
      return ids[0] != null && ids.every(id => id === ids[0]) ? ids[0] : undefined
    }, 30_000, 100)
    o.log?.(`site ${site}: ${o.count} nodes × ${o.slots} slot(s) up on loopback; scheduler node ${infos.findIndex(i => i.peerId === scheduler) + 1}`)
    return { site, nodes, infos }
  } catch (err) {
    await stopAll(nodes)
    throw err
  }
}

export async function stopAll (nodes: Tracked[]): Promise<void> {
  await Promise.all(nodes.map(async n => { await stopTracked(n) }))
}

// ---------------------------------------------------------------- /proc

/** Clock ticks per second of /proc/<pid>/stat (USER_HZ is 100 on every Linux Node runs on). */
export const CLK_TCK = 100

export interface ProcCpu { utime: number, stime: number, cutime: number, cstime: number }

export async function procCpu (pid: number): Promise<ProcCpu> {
  const s = await readFile(`/proc/${pid}/stat`, 'utf8')
  const f = s.slice(s.lastIndexOf(')') + 2).split(' ')
  // fields after the name start at 3 (state); utime is field 14 → index 11
  return { utime: Number(f[11]), stime: Number(f[12]), cutime: Number(f[13]), cstime: Number(f[14]) }
}

/** VmRSS and VmHWM in bytes. */
export async function procMem (pid: number): Promise<{ rss: number, hwm: number }> {
  const s = await readFile(`/proc/${pid}/status`, 'utf8')
  const kb = (key: string): number => Number(new RegExp(`^${key}:\\s*(\\d+)`, 'm').exec(s)?.[1] ?? NaN) * 1024
  return { rss: kb('VmRSS'), hwm: kb('VmHWM') }
}

export const MiB = 1024 * 1024
/** decimal megabyte: targets say "MB" */
export const MB = 1_000_000
