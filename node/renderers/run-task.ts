/**
 * Runs one render task as a child process: no shell, its own process group
 * (so a timeout or abort kills everything it started), progress and a log
 * tail from its output, and CPU / memory / I/O sampled from /proc — Node
 * gives no rusage of children, so samples (plus one trick, see
 * `reapedChildTicks`) are all there is.
 */
import { spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { readdir, readFile, rm, stat } from 'node:fs/promises'
import { StringDecoder } from 'node:string_decoder'
import type { CommandLine, RenderTask, RendererAdapter } from './adapter.js'

/** How a frame stopped for using more memory than its job declared begins its error. */
export const MEMORY_LIMIT_ERROR = 'memory limit exceeded'

export class RenderTaskError extends Error {
  constructor (message: string) { super(message); this.name = 'RenderTaskError' }
}

export interface RunTaskOptions {
  signal?: AbortSignal
  /** kill the task (whole process group) after this long */
  timeoutMs?: number
  /** fraction of the task done, in [0, 1], never decreasing */
  onProgress?: (fraction: number) => void
  /** every line the renderer prints (stdout and stderr), as it comes: live log views */
  onLine?: (line: string) => void
  /** lines of stdout+stderr kept for `logTail` (default 50) */
  logTailLines?: number
  /** rewrites the command before it is spawned, e.g. to run it in a sandbox */
  wrap?: (cmd: CommandLine) => CommandLine
  /** how often /proc is sampled (default 1 s: a scan reads every process of the host) */
  sampleIntervalMs?: number
  /** stop the task when its process group's memory goes over this (bytes) */
  maxRssBytes?: number
  /** SIGTERM → SIGKILL delay when killing (default 2000 ms) */
  killGraceMs?: number
}

export interface TaskResult {
  /** exit code 0, every expected output present and non-empty, not killed */
  ok: boolean
  exitCode: number | null
  signal: string | null
  /** expected outputs that exist and are non-empty */
  outputs: string[]
  missing: string[]
  logTail: string[]
  cpuSeconds: number
  peakRssBytes: number
  /** bytes that reached the storage layer (/proc/<pid>/io read_bytes / write_bytes) */
  ioReadBytes: number
  ioWriteBytes: number
  /** bytes through read/write calls, cache hits and pipes included (rchar / wchar) */
  ioReadChars: number
  ioWriteChars: number
  wallSeconds: number
  /** why it failed: the renderer's own error line when there is one */
  error?: string
  timedOut: boolean
  /** we killed it (abort or timeout) */
  killed: boolean
  /** what was run (after `wrap`) */
  command: CommandLine
}

// ---------------------------------------------------------------- log lines

const MAX_LINE = 8192

/** Splits a byte stream into lines at \n, \r\n or \r (progress lines often end in \r alone). */
class LineSplitter {
  private readonly decoder = new StringDecoder('utf8')
  private rest = ''

  push (chunk: Buffer): string[] {
    return this.split(this.rest + this.decoder.write(chunk))
  }

  end (): string[] {
    const lines = this.split(this.rest + this.decoder.end())
    if (this.rest.trim() !== '') lines.push(this.rest)
    this.rest = ''
    return lines
  }

  private split (text: string): string[] {
    const parts = text.split(/\r\n|\r|\n/)
    this.rest = parts.pop() ?? ''
    // A renderer that never prints a newline must not grow memory without bound.
    if (this.rest.length > MAX_LINE) {
      parts.push(this.rest.slice(0, MAX_LINE))
      this.rest = ''
    }
    return parts.filter(l => l.trim() !== '').map(l => l.length > MAX_LINE ? l.slice(0, MAX_LINE) : l)
  }
}

class RingBuffer {
  private readonly items: string[] = []
  constructor (private readonly size: number) {}
  push (item: string): void {
    if (this.size <= 0) return
    this.items.push(item)
    if (this.items.length > this.size) this.items.shift()
  }

  toArray (): string[] { return [...this.items] }
}

// ---------------------------------------------------------------- /proc sampling

/** USER_HZ: fixed at 100 by the Linux ABI on every architecture Node runs on. */
const TICKS_PER_SECOND = 100

interface ProcStat { pid: number, ppid: number, pgrp: number, cpuTicks: number }

/** One /proc/<pid>/stat; utime+stime plus cutime+cstime (its children already reaped). */
function parseStat (text: string): ProcStat | undefined {
  const close = text.lastIndexOf(')') // the command name may contain spaces and parens
  if (close < 0) return undefined
  const f = text.slice(close + 2).split(' ')
  const n = (i: number): number => Number(f[i])
  return { pid: Number(text.slice(0, text.indexOf(' '))), ppid: n(1), pgrp: n(2), cpuTicks: n(11) + n(12) + n(13) + n(14) }
}

let lastScan: { at: number, stats: Promise<ProcStat[]> } | undefined

/** Every process's stat; shared by concurrent tasks so N tasks don't scan /proc N times. */
function scanProc (maxAgeMs: number): Promise<ProcStat[]> {
  const now = Date.now()
  if (maxAgeMs > 0 && lastScan !== undefined && now - lastScan.at <= maxAgeMs) return lastScan.stats
  const stats = (async () => {
    const pids = (await readdir('/proc')).filter(name => /^\d+$/.test(name))
    const all = await Promise.all(pids.map(async pid => {
      try { return parseStat(await readFile(`/proc/${pid}/stat`, 'utf8')) } catch { return undefined } // gone meanwhile
    }))
    return all.filter((s): s is ProcStat => s !== undefined)
  })()
  lastScan = { at: now, stats }
  return stats
}

/**
 * The task's processes: its process group, plus descendants that left it
 * (a sandbox may start a new session), found through parent pids.
 */
function members (stats: ProcStat[], root: number): ProcStat[] {
  const children = new Map<number, ProcStat[]>()
  for (const s of stats) {
    const list = children.get(s.ppid)
    if (list === undefined) children.set(s.ppid, [s])
    else list.push(s)
  }
  const found = new Map<number, ProcStat>()
  for (const s of stats) if (s.pgrp === root || s.pid === root) found.set(s.pid, s)
  const queue = [...found.values()]
  while (queue.length > 0) {
    for (const child of children.get(queue.pop()!.pid) ?? []) {
      if (!found.has(child.pid)) { found.set(child.pid, child); queue.push(child) }
    }
  }
  return [...found.values()]
}

/** A `Key: 123` line of /proc/<pid>/status (kB) or /proc/<pid>/io (bytes). */
function field (text: string, key: string): number {
  const m = new RegExp(`^${key}:\\s*(\\d+)`, 'm').exec(text)
  return m === null ? 0 : Number(m[1])
}

interface Usage { cpuTicks: number, peakRssBytes: number, readBytes: number, writeBytes: number, rchar: number, wchar: number }

/**
 * Running totals for one process group; every figure only grows. CPU and I/O
 * of processes already reaped by a member are in that member's counters
 * (cutime, and /proc/<pid>/io counts reaped children too).
 */
class UsageMonitor {
  readonly usage: Usage = { cpuTicks: 0, peakRssBytes: 0, readBytes: 0, writeBytes: 0, rchar: 0, wchar: 0 }
  private busy = false

  constructor (private readonly root: number) {}

  async sample (maxAgeMs: number): Promise<void> {
    if (this.busy) return
    this.busy = true
    try {
      const group = members(await scanProc(maxAgeMs), this.root)
      if (group.length === 0) return
      let cpu = 0; let rss = 0; let hwm = 0; let rb = 0; let wb = 0; let rc = 0; let wc = 0
      await Promise.all(group.map(async p => {
        cpu += p.cpuTicks
        try {
          const status = await readFile(`/proc/${p.pid}/status`, 'utf8')
          rss += field(status, 'VmRSS') * 1024
          hwm = Math.max(hwm, field(status, 'VmHWM') * 1024)
        } catch {}
        try {
          const io = await readFile(`/proc/${p.pid}/io`, 'utf8')
          rb += field(io, 'read_bytes'); wb += field(io, 'write_bytes')
          rc += field(io, 'rchar'); wc += field(io, 'wchar')
        } catch {} // not ours to read (another user), or gone
      }))
      const u = this.usage
      u.cpuTicks = Math.max(u.cpuTicks, cpu)
      u.peakRssBytes = Math.max(u.peakRssBytes, rss, hwm)
      u.readBytes = Math.max(u.readBytes, rb); u.writeBytes = Math.max(u.writeBytes, wb)
      u.rchar = Math.max(u.rchar, rc); u.wchar = Math.max(u.wchar, wc)
    } catch {} finally { // /proc unreadable: report what we have
      this.busy = false
    }
  }
}

/**
 * CPU of our own reaped children (cutime + cstime of this Node process). A
 * child's whole CPU time lands here the moment it is reaped, so the jump
 * across its exit catches a short process that no sample saw; read
 * synchronously so no other exit slips in between.
 */
function reapedChildTicks (): number {
  try {
    const s = readFileSync('/proc/self/stat', 'utf8')
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ')
    return Number(f[13]) + Number(f[14])
  } catch {
    return 0
  }
}

/** Counts exits of our children, to tell whether a cutime jump is all one task's. */
let exitSeq = 0

// ---------------------------------------------------------------- killing

const liveGroups = new Set<number>()
let exitHookInstalled = false

function killGroup (pgid: number, signal: NodeJS.Signals): void {
  try { process.kill(-pgid, signal) } catch {} // ESRCH: already gone
}

function groupAlive (pgid: number): boolean {
  try { process.kill(-pgid, 0); return true } catch { return false }
}

/** Detached groups outlive us; when this process exits normally, take them along. */
function installExitHook (): void {
  if (exitHookInstalled) return
  exitHookInstalled = true
  process.once('exit', () => { for (const pgid of liveGroups) killGroup(pgid, 'SIGKILL') })
}

// ---------------------------------------------------------------- runTask

async function existingOutputs (paths: string[]): Promise<{ outputs: string[], missing: string[] }> {
  const outputs: string[] = []; const missing: string[] = []
  for (const p of paths) {
    let ok = false
    try { ok = (await stat(p)).size > 0 } catch {}
    ;(ok ? outputs : missing).push(p)
  }
  return { outputs, missing }
}

// A function, so TypeScript doesn't assume the flag can't change across an await.
function aborted (signal: AbortSignal | undefined): boolean {
  return signal?.aborted === true
}

function checkTask (task: RenderTask): void {
  if (!Number.isSafeInteger(task.start) || !Number.isSafeInteger(task.end) || task.end < task.start) {
    throw new RenderTaskError(`bad frame range ${task.start}..${task.end}`)
  }
}

/** The renderer's own words for a failure: adapter's pick, else the last line saying "error", else the last stderr line. */
function errorFromLog (adapter: RendererAdapter, tail: string[], lastStderr: string | undefined): string | undefined {
  const own = adapter.errorLine?.(tail)
  if (own !== undefined && own !== '') return own
  return [...tail].reverse().find(l => /error/i.test(l))?.trim() ?? lastStderr?.trim()
}

/**
 * Runs `task` to completion, timeout or abort and says what happened; it
 * resolves for every renderer failure (see `ok` / `error`) and throws only
 * for a task no adapter can run (bad range, pattern or template).
 */
export async function runTask (adapter: RendererAdapter, task: RenderTask, opts: RunTaskOptions = {}): Promise<TaskResult> {
  checkTask(task)
  const expected = adapter.expectedOutputs(task)
  let command = adapter.commandLine(task)
  if (opts.wrap !== undefined) command = opts.wrap(command)
  const tailSize = opts.logTailLines ?? 50
  const grace = opts.killGraceMs ?? 2000
  const interval = opts.sampleIntervalMs ?? 1000

  const base = {
    exitCode: null, signal: null, outputs: [], missing: expected, logTail: [], cpuSeconds: 0, peakRssBytes: 0,
    ioReadBytes: 0, ioWriteBytes: 0, ioReadChars: 0, ioWriteChars: 0, wallSeconds: 0, command
  }
  if (aborted(opts.signal)) return { ...base, ok: false, error: 'aborted before start', timedOut: false, killed: true }

  // Frames left by an earlier attempt must not pass for this one's.
  await Promise.all(expected.map(p => rm(p, { force: true })))
  await adapter.prepare?.(task)
  if (aborted(opts.signal)) return { ...base, ok: false, error: 'aborted before start', timedOut: false, killed: true }

  const log = new RingBuffer(tailSize)
  let lastStderr: string | undefined
  const parse = adapter.createProgressParser?.(task) ?? ((line: string) => adapter.parseProgress(line, task))
  let progress = 0
  const onLine = (line: string, fromStderr: boolean): void => {
    log.push(line)
    if (fromStderr) lastStderr = line
    try { opts.onLine?.(line) } catch {}
    const p = parse(line)
    if (p === undefined || !Number.isFinite(p) || p <= progress) return
    progress = Math.min(1, p)
    try { opts.onProgress?.(progress) } catch {} // a UI callback must not take the render down
  }

  const started = process.hrtime.bigint()
  const child = spawn(command.file, command.args, {
    cwd: command.cwd,
    env: { ...process.env, ...command.env },
    detached: true, // own process group: one kill reaches everything it starts
    stdio: ['ignore', 'pipe', 'pipe']
  })
  const pid = child.pid

  let timedOut = false
  let overMemory = false
  let killed = false
  let spawnError: Error | undefined
  let exit: { code: number | null, signal: NodeJS.Signals | null } | undefined
  let monitor: UsageMonitor | undefined
  let sampler: NodeJS.Timeout | undefined
  let killTimer: NodeJS.Timeout | undefined
  let timeout: NodeJS.Timeout | undefined
  let baseline = { ticks: reapedChildTicks(), seq: exitSeq }

  const terminate = (): void => {
    if (pid === undefined || killTimer !== undefined) return
    killed = true
    killGroup(pid, 'SIGTERM')
    killTimer = setTimeout(() => killGroup(pid, 'SIGKILL'), grace)
    killTimer.unref()
  }
  const onAbort = (): void => terminate()

  if (pid !== undefined) {
    liveGroups.add(pid)
    installExitHook()
    monitor = new UsageMonitor(pid)
    void monitor.sample(0) // right away, fresh scan: a short task may be gone before the first tick
    sampler = setInterval(() => {
      baseline = { ticks: reapedChildTicks(), seq: exitSeq }
      void monitor?.sample(interval / 2).then(() => {
        if (opts.maxRssBytes !== undefined && (monitor?.usage.peakRssBytes ?? 0) > opts.maxRssBytes && !overMemory) { overMemory = true; terminate() }
      })
    }, interval)
    sampler.unref()
    if (opts.timeoutMs !== undefined) {
      timeout = setTimeout(() => { timedOut = true; terminate() }, opts.timeoutMs)
      timeout.unref()
    }
    opts.signal?.addEventListener('abort', onAbort, { once: true })
  }

  const outSplit = new LineSplitter()
  const errSplit = new LineSplitter()
  child.stdout.on('data', (chunk: Buffer) => { for (const l of outSplit.push(chunk)) onLine(l, false) })
  child.stderr.on('data', (chunk: Buffer) => { for (const l of errSplit.push(chunk)) onLine(l, true) })

  let reapedTicks = 0
  await new Promise<void>(resolve => {
    let closeCap: NodeJS.Timeout | undefined
    const done = (): void => { clearTimeout(closeCap); resolve() }
    child.once('error', err => {
      spawnError = err
      if (pid === undefined) done()
    })
    child.once('exit', (code, signal) => {
      const now = reapedChildTicks()
      // Only if no other task's child was reaped since the baseline is the jump all ours.
      if (exitSeq === baseline.seq) reapedTicks = now - baseline.ticks
      exitSeq++
      exit = { code, signal }
      if (pid !== undefined && groupAlive(pid)) {
        // Leftovers (background helpers) go too: a finished task leaves nothing running.
        killGroup(pid, 'SIGTERM')
        const t = setTimeout(() => killGroup(pid, 'SIGKILL'), grace)
        t.unref()
      }
      // Something that left the group may still hold our pipes; don't wait for it forever.
      closeCap = setTimeout(() => { child.stdout.destroy(); child.stderr.destroy(); done() }, grace + 1000)
    })
    child.once('close', () => done())
  })
  const wallSeconds = Number(process.hrtime.bigint() - started) / 1e9
  for (const l of outSplit.end()) onLine(l, false)
  for (const l of errSplit.end()) onLine(l, true)
  clearInterval(sampler)
  clearTimeout(timeout)
  opts.signal?.removeEventListener('abort', onAbort)
  if (pid !== undefined) liveGroups.delete(pid)

  let finalizeError: string | undefined
  try {
    await adapter.finalize?.(task)
  } catch (err) {
    finalizeError = `cannot collect outputs: ${(err as Error).message}`
  }
  const { outputs, missing } = await existingOutputs(expected)
  const usage = monitor?.usage
  const exitCode = exit?.code ?? null
  const signal = exit?.signal ?? null
  const ok = spawnError === undefined && exitCode === 0 && missing.length === 0 && !killed && finalizeError === undefined

  let error: string | undefined
  if (!ok) {
    const renderer = errorFromLog(adapter, log.toArray(), lastStderr)
    if (spawnError !== undefined && exit === undefined) {
      error = `cannot start ${command.file}: ${(spawnError as NodeJS.ErrnoException).code ?? spawnError.message}`
    } else if (timedOut) error = `timed out after ${opts.timeoutMs} ms`
    else if (overMemory) error = `${MEMORY_LIMIT_ERROR}: used ${Math.round((usage?.peakRssBytes ?? 0) / 2 ** 20)} MiB, limit ${Math.round((opts.maxRssBytes ?? 0) / 2 ** 20)} MiB`
    else if (killed) error = 'aborted'
    else if (exitCode !== 0) error = renderer ?? (signal !== null ? `killed by ${signal}` : `exited with code ${exitCode}`)
    else if (finalizeError !== undefined) error = finalizeError
    else error = `exited with code 0 but did not write ${missing.map(m => m.slice(m.lastIndexOf('/') + 1)).join(', ')}`
  }
  if (ok && progress < 1) try { opts.onProgress?.(1) } catch {}

  return {
    ok,
    exitCode,
    signal,
    outputs,
    missing,
    logTail: log.toArray(),
    cpuSeconds: Math.max(usage?.cpuTicks ?? 0, reapedTicks) / TICKS_PER_SECOND,
    peakRssBytes: usage?.peakRssBytes ?? 0,
    ioReadBytes: usage?.readBytes ?? 0,
    ioWriteBytes: usage?.writeBytes ?? 0,
    ioReadChars: usage?.rchar ?? 0,
    ioWriteChars: usage?.wchar ?? 0,
    wallSeconds,
    error,
    timedOut,
    killed,
    command
  }
}
