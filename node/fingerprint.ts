/**
 * Collects the host fingerprint (the patent's FIGURE 9) that a node
 * advertises so schedulers can match job requirements against the host.
 * Everything is read from procfs/sysfs or probed with short child processes;
 * anything unreadable (containers hide DMI, VMs have no GPU) degrades to
 * 'unknown' / 0 / [] rather than failing, since a partial fingerprint is
 * still useful to a scheduler.
 */
import { execFile } from 'node:child_process'
import { watch, type FSWatcher } from 'node:fs'
import { readFile, readdir, stat } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import type { Fingerprint, GpuInfo, RendererInfo } from './fingerprint-types.js'

export interface ProbeOptions {
  /** renderer names to leave out (tests use this to vary hosts) */
  disabledRenderers?: string[]
  signal?: AbortSignal
  /** environment for the probes; its PATH decides which binaries are found. Default process.env */
  env?: NodeJS.ProcessEnv
}

export interface FingerprintOptions extends ProbeOptions {
  dataDir: string
  slotsTotal: number
  slotsBusy?: number
  /** result of an earlier probeRenderers(), to skip the (slow) probes */
  renderers?: RendererInfo[]
}

export interface WatchOptions extends FingerprintOptions {
  /** how often renderers and licences are re-probed. Default 30 s */
  intervalMs?: number
  /** the fingerprint already advertised; without it the first refresh reports one */
  initial?: Fingerprint
  onChange: (fp: Fingerprint) => void
  /** errors from background refreshes; they are otherwise swallowed */
  onError?: (err: unknown) => void
}

export interface FingerprintWatcher {
  stop (): void
  /** re-probe now; resolves once onChange (if due) has been called */
  refresh (): Promise<void>
}

const PROBE_TIMEOUT_MS = 10_000
const DEFAULT_INTERVAL_MS = 30_000

export async function collectFingerprint (opts: FingerprintOptions): Promise<Fingerprint> {
  opts.signal?.throwIfAborted()
  const disabled = new Set(opts.disabledRenderers ?? [])
  const [machine, osInfo, cpu, mem, gpus, renderers, licenses] = await Promise.all([
    readMachine(),
    readOs(),
    readCpu(),
    readMeminfo(),
    readGpus(opts.env),
    opts.renderers != null
      ? Promise.resolve(opts.renderers.filter(r => !disabled.has(r.name)))
      : probeRenderers(opts),
    readLicenses(opts.dataDir)
  ])
  opts.signal?.throwIfAborted()
  return {
    hostname: os.hostname(),
    machine,
    os: osInfo,
    cpu,
    ram: { total: mem.MemTotal ?? os.totalmem(), free: mem.MemAvailable ?? mem.MemFree ?? os.freemem() },
    swap: { total: mem.SwapTotal ?? 0, free: mem.SwapFree ?? 0 },
    gpus,
    renderers,
    licenses,
    slots: { total: opts.slotsTotal, busy: opts.slotsBusy ?? 0 }
  }
}

/**
 * The renderers this host can run: the in-process ones always, plus external
 * binaries that answer `--version` (probed in parallel, no shell).
 */
export async function probeRenderers (opts: ProbeOptions = {}): Promise<RendererInfo[]> {
  const disabled = new Set(opts.disabledRenderers ?? [])
  const probes: Array<Promise<RendererInfo | undefined>> = [
    readOwnVersion().then(version => ({ name: 'builtin', version })),
    Promise.resolve({ name: 'command', version: '1' }),
    // Blender prints `Blender 3.4.1` on stdout (possibly after warnings)
    probeVersion('blender', 'blender', /^Blender\s+(\d+\.\d+(?:\.\d+)?)/m, opts),
    // POV-Ray prints its banner on stderr: `POV-Ray 3.7.0.10.unofficial`
    probeVersion('povray', 'povray', /^POV-Ray\s+(?:[Vv]ersion\s+)?(\d+(?:\.\d+)+(?:-[\w.]+)?)/m, opts)
  ]
  const found = await Promise.all(probes)
  opts.signal?.throwIfAborted()
  return found.filter((r): r is RendererInfo => r != null && !disabled.has(r.name))
}

/** Licence names from `<dataDir>/licenses`, one per line; `#` starts a comment. Missing file = none. */
export async function readLicenses (dataDir: string): Promise<string[]> {
  let text: string
  try {
    text = await readFile(path.join(dataDir, 'licenses'), 'utf8')
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'ENOENT' || code === 'ENOTDIR') return []
    throw err // a licence file we cannot read is a misconfiguration worth surfacing
  }
  const names = text.split(/\r?\n/).map(l => l.replace(/#.*/, '').trim()).filter(l => l !== '')
  return [...new Set(names)]
}

/**
 * Whether two fingerprints differ in anything a scheduler cares about.
 * Free memory/swap and the current CPU clock fluctuate constantly, so they
 * are ignored to avoid re-advertising on every tick; order of renderers and
 * licences is not significant either.
 */
export function fingerprintChanged (a: Fingerprint, b: Fingerprint): boolean {
  return stableKey(a) !== stableKey(b)
}

function stableKey (fp: Fingerprint): string {
  const byName = (x: { name: string }, y: { name: string }): number => x.name < y.name ? -1 : x.name > y.name ? 1 : 0
  return JSON.stringify({
    ...fp,
    cpu: { ...fp.cpu, speedMHz: 0 },
    ram: { total: fp.ram.total },
    swap: { total: fp.swap.total },
    renderers: [...fp.renderers].sort(byName).map(r => [r.name, r.version]),
    licenses: [...fp.licenses].sort()
  })
}

/**
 * Re-collects the fingerprint every `intervalMs` (re-probing renderers) and
 * whenever the licences file changes (reusing the last probe), calling
 * onChange when fingerprintChanged. Options are read at each refresh, so a
 * node may update e.g. slotsBusy or env in place.
 */
/** Where the probed renderer binaries are on PATH, and when they last changed. */
export async function rendererBinarySignature (env: NodeJS.ProcessEnv): Promise<string> {
  const dirs = (env.PATH ?? '').split(':').filter(Boolean)
  const parts: string[] = []
  for (const name of ['blender', 'povray']) {
    for (const d of dirs) {
      const st = await stat(`${d}/${name}`).catch(() => undefined)
      if (st != null) { parts.push(`${d}/${name}@${st.mtimeMs}:${st.size}`); break }
    }
  }
  return parts.join(';')
}

export function watchFingerprint (opts: WatchOptions): FingerprintWatcher {
  const stopper = new AbortController()
  const signal = opts.signal != null ? AbortSignal.any([opts.signal, stopper.signal]) : stopper.signal
  let last = opts.initial
  let cached = opts.initial?.renderers
  let needProbe = cached == null
  let queued: Promise<void> | undefined
  let tail: Promise<void> = Promise.resolve()

  const refreshOnce = async (): Promise<void> => {
    if (signal.aborted) return
    if (needProbe || cached == null) {
      needProbe = false
      cached = await probeRenderers({ ...opts, signal })
    }
    const fp = await collectFingerprint({ ...opts, signal, renderers: cached })
    if (signal.aborted) return
    if (last == null || fingerprintChanged(last, fp)) {
      last = fp
      opts.onChange(fp)
    }
  }

  // Serialise refreshes and coalesce bursts (fs.watch fires several events per write)
  const schedule = (probe: boolean): Promise<void> => {
    if (probe) needProbe = true
    if (queued != null) return queued
    const p = tail.then(() => { queued = undefined; return refreshOnce() })
    queued = p
    tail = p.catch(() => {})
    return p
  }
  const background = (probe: boolean): void => {
    schedule(probe).catch(err => { if (!signal.aborted) opts.onError?.(err) })
  }

  // Re-probing spawns blender and povray (a fraction of a second of CPU each):
  // do it only when one of their binaries appeared, vanished or changed.
  let binaries: string | undefined
  const timer = setInterval(() => {
    void rendererBinarySignature(opts.env ?? process.env).then(sig => {
      const changed = binaries !== undefined && sig !== binaries
      binaries = sig
      background(changed)
    })
  }, opts.intervalMs ?? DEFAULT_INTERVAL_MS)
  timer.unref() // the node's own sockets keep the process alive, not this

  // Watch the directory, not the file, so creating the file is noticed too
  let watcher: FSWatcher | undefined
  try {
    watcher = watch(opts.dataDir, { persistent: false }, (_event, file) => {
      if (file == null || file.toString() === 'licenses') background(false)
    })
    watcher.on('error', () => { watcher?.close(); watcher = undefined })
  } catch {
    // dataDir missing or not watchable: the interval still picks changes up
  }

  if (last == null) background(true)

  return {
    stop () {
      clearInterval(timer)
      watcher?.close()
      stopper.abort()
    },
    refresh: async () => await schedule(true)
  }
}

// ---- helpers -------------------------------------------------------------

async function readText (file: string): Promise<string | undefined> {
  try {
    const s = (await readFile(file, 'utf8')).trim()
    return s === '' ? undefined : s
  } catch {
    return undefined
  }
}

// SMBIOS chassis types (DMTF DSP0134, 7.4.1), the common ones
const CHASSIS: Record<string, string> = {
  1: 'other', 3: 'desktop', 4: 'low-profile-desktop', 6: 'mini-tower', 7: 'tower', 8: 'portable',
  9: 'laptop', 10: 'notebook', 13: 'all-in-one', 14: 'sub-notebook', 17: 'server', 23: 'rack-mount',
  24: 'sealed-case', 28: 'blade', 30: 'tablet', 31: 'convertible', 32: 'detachable', 35: 'mini-pc', 36: 'stick-pc'
}

async function readMachine (): Promise<Fingerprint['machine']> {
  const dmi = '/sys/class/dmi/id'
  const [vendor, model, chassis] = await Promise.all([
    readText(`${dmi}/sys_vendor`), readText(`${dmi}/product_name`), readText(`${dmi}/chassis_type`)
  ])
  return {
    family: os.machine(),
    type: chassis != null ? (CHASSIS[chassis] ?? `chassis-${chassis}`) : 'unknown',
    vendor: vendor ?? 'unknown',
    model: model ?? 'unknown'
  }
}

async function readOs (): Promise<Fingerprint['os']> {
  const text = await readText('/etc/os-release') ?? await readText('/usr/lib/os-release') ?? ''
  const rel: Record<string, string> = {}
  for (const line of text.split('\n')) {
    const m = /^([A-Z0-9_]+)=(.*)$/.exec(line.trim())
    if (m != null) rel[m[1]] = m[2].replace(/^(["'])(.*)\1$/, '$2')
  }
  return {
    family: os.type(),
    type: rel.ID ?? rel.NAME ?? 'unknown',
    version: rel.VERSION_ID ?? 'unknown',
    release: os.release()
  }
}

async function readCpu (): Promise<Fingerprint['cpu']> {
  // The first processor block is representative; hybrid CPUs differ only in clocks
  const info: Record<string, string> = {}
  for (const line of (await readText('/proc/cpuinfo') ?? '').split('\n')) {
    const i = line.indexOf(':')
    if (i < 0) continue
    const key = line.slice(0, i).trim()
    if (!(key in info)) info[key] = line.slice(i + 1).trim()
  }
  const first = os.cpus()[0]
  const vendor = info.vendor_id
  const family = vendor != null
    ? (info['cpu family'] != null ? `${vendor} family ${info['cpu family']}` : vendor)
    : os.arch()
  let speed = Math.round(Number(info['cpu MHz'] ?? 0)) || (first?.speed ?? 0)
  if (speed === 0) {
    const khz = Number(await readText('/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq') ?? 0)
    speed = Math.round(khz / 1000) || 0
  }
  return {
    // honours CPU affinity / cgroup cpusets, like nproc
    count: os.availableParallelism(),
    family,
    model: info['model name'] ?? first?.model ?? 'unknown',
    speedMHz: speed
  }
}

/** /proc/meminfo values in bytes */
async function readMeminfo (): Promise<Record<string, number>> {
  const out: Record<string, number> = {}
  for (const line of (await readText('/proc/meminfo') ?? '').split('\n')) {
    const m = /^(\w+):\s+(\d+)(?:\s+kB)?/.exec(line)
    if (m != null) out[m[1]] = Number(m[2]) * (line.endsWith('kB') ? 1024 : 1)
  }
  return out
}

// PCI vendor ids seen on graphics devices
const PCI_VENDORS: Record<string, string> = {
  '0x10de': 'NVIDIA', '0x1002': 'AMD', '0x8086': 'Intel', '0x1a03': 'ASPEED', '0x102b': 'Matrox',
  '0x15ad': 'VMware', '0x1af4': 'Red Hat (virtio)', '0x1234': 'QEMU', '0x80ee': 'VirtualBox'
}

async function readGpus (env?: NodeJS.ProcessEnv): Promise<GpuInfo[]> {
  try {
    const drm = '/sys/class/drm'
    const cards = (await readdir(drm).catch(() => [] as string[])).filter(c => /^card\d+$/.test(c))
    const gpus: GpuInfo[] = []
    for (const card of cards) {
      const vendor = await readText(`${drm}/${card}/device/vendor`)
      const device = await readText(`${drm}/${card}/device/device`)
      if (vendor == null) continue // platform (non-PCI) display: ids unknown
      gpus.push({ vendor: PCI_VENDORS[vendor.toLowerCase()] ?? vendor, model: device ?? 'unknown' })
    }
    if (gpus.length > 0) return gpus
    // No DRM driver bound (e.g. headless server without the GPU driver): ask lspci
    const out = await run('lspci', ['-mm'], env, undefined)
    if (out == null) return []
    const result: GpuInfo[] = []
    for (const line of out.stdout.split('\n')) {
      const fields = [...line.matchAll(/"([^"]*)"/g)].map(m => m[1])
      if (fields.length >= 3 && /VGA|3D|Display/i.test(fields[0])) result.push({ vendor: fields[1], model: fields[2] })
    }
    return result
  } catch {
    return [] // GPU detection is best effort
  }
}

/** The farmesh package version, from the nearest package.json named farmesh (works from source and dist/) */
async function readOwnVersion (): Promise<string> {
  let dir = path.dirname(fileURLToPath(import.meta.url))
  for (;;) {
    const text = await readText(path.join(dir, 'package.json'))
    if (text != null) {
      try {
        const pkg = JSON.parse(text) as { name?: string, version?: string }
        if (pkg.name === 'farmesh' && typeof pkg.version === 'string') return pkg.version
      } catch {}
    }
    const up = path.dirname(dir)
    if (up === dir) return 'unknown'
    dir = up
  }
}

async function probeVersion (name: string, bin: string, re: RegExp, opts: ProbeOptions): Promise<RendererInfo | undefined> {
  const out = await run(bin, ['--version'], opts.env, opts.signal)
  if (out == null) return undefined
  const m = re.exec(out.stdout) ?? re.exec(out.stderr)
  return m != null ? { name, version: m[1] } : undefined
}

interface RunOutput { stdout: string, stderr: string }

/**
 * Runs a binary without a shell. Resolves undefined when it cannot be
 * started; otherwise returns its output even on non-zero exit or timeout,
 * since version banners are printed before any failure. Rejects only on abort.
 */
function run (file: string, args: string[], env: NodeJS.ProcessEnv | undefined, signal: AbortSignal | undefined): Promise<RunOutput | undefined> {
  return new Promise((resolve, reject) => {
    execFile(file, args, {
      env: env ?? process.env,
      timeout: PROBE_TIMEOUT_MS,
      killSignal: 'SIGKILL',
      signal,
      encoding: 'utf8',
      maxBuffer: 1 << 20,
      windowsHide: true
    }, (err, stdout, stderr) => {
      if (err != null) {
        if (err.name === 'AbortError') { reject(err); return }
        if (typeof err.code === 'string') { resolve(undefined); return } // ENOENT, EACCES: not usable
      }
      resolve({ stdout, stderr })
    })
  })
}
