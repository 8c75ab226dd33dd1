import { readFile } from 'node:fs/promises'
import { availableParallelism } from 'node:os'
import { multiaddr } from '@multiformats/multiaddr'
import { ConfigError, DataDirError, UsageError } from './errors.js'
import { dirname } from 'node:path'
import { dataDirPaths, defaultDataDir } from '../storage/data-dir.js'

/**
 * Everything `farmesh start` can be told. Each option comes, in order of
 * precedence, from a flag, an environment variable, the data directory's
 * `config.json`, or its default.
 */
export interface NodeOptions {
  data: string
  site: string
  listen: string[]
  peers: string[]
  mdns: boolean
  mdnsInterface?: string
  slots: number
  render: boolean
  schedule: boolean
  /** host:port of the local HTTP API */
  api: string
  /** renderers to hide from this host's fingerprint (tests, or broken installs) */
  disableRenderers: string[]
  dropFolder?: string
  debug: boolean
  /** fair-share weights by user or project (config.json `fairShare`) */
  fairShare?: Record<string, number>
  /** a workstation renders only while its user is away */
  workstation?: WorkstationOptions
  /** hours with no new frames, e.g. `09:00-18:00` */
  sleep: string[]
  /** run other sites' jobs even without a working sandbox (explicit operator choice) */
  allowUnsandboxed?: boolean
  /** days other sites' inputs are kept for re-renders (deduplicated per origin) */
  remoteRetentionDays: number
  /** GiB of inputs kept per other site; a bundle that would exceed it is refused */
  remoteQuotaGb: number
}

export interface WorkstationOptions {
  /** seconds without activity before it renders again */
  idleAfterSec: number
  /** seconds its running frames may finish after activity before they are handed back */
  graceSec: number
  /** a file whose modification counts as user activity (tests, or a desktop hook) */
  activityFile?: string
  /** 1-minute load average above which the user counts as active */
  loadThreshold?: number
}

export type OptionInput = Partial<Omit<NodeOptions, 'data'>>

const ENV: Record<keyof OptionInput, string> = {
  site: 'FARMESH_SITE',
  listen: 'FARMESH_LISTEN',
  peers: 'FARMESH_PEERS',
  mdns: 'FARMESH_MDNS',
  mdnsInterface: 'FARMESH_MDNS_INTERFACE',
  slots: 'FARMESH_SLOTS',
  render: 'FARMESH_RENDER',
  schedule: 'FARMESH_SCHEDULE',
  api: 'FARMESH_API',
  disableRenderers: 'FARMESH_DISABLE_RENDERERS',
  dropFolder: 'FARMESH_DROP_FOLDER',
  debug: 'FARMESH_DEBUG',
  fairShare: 'FARMESH_FAIR_SHARE',
  allowUnsandboxed: 'FARMESH_ALLOW_UNSANDBOXED',
  remoteRetentionDays: 'FARMESH_REMOTE_RETENTION_DAYS',
  remoteQuotaGb: 'FARMESH_REMOTE_QUOTA_GB',
  workstation: 'FARMESH_WORKSTATION',
  sleep: 'FARMESH_SLEEP'
}

const LISTS = new Set(['listen', 'peers', 'disableRenderers', 'sleep'])
const BOOLS = new Set(['mdns', 'render', 'schedule', 'debug', 'allowUnsandboxed'])

function fromEnv (env: NodeJS.ProcessEnv): OptionInput {
  const out: Record<string, unknown> = {}
  for (const [key, name] of Object.entries(ENV)) {
    const v = env[name]
    if (v == null || v === '') continue
    if (LISTS.has(key)) out[key] = v.split(',').map(s => s.trim()).filter(Boolean)
    else if (key === 'fairShare' || key === 'workstation') {
      try { out[key] = JSON.parse(v) } catch { throw new UsageError(`${name}: expected JSON`) }
    } else if (BOOLS.has(key)) {
      if (!/^(1|0|true|false|yes|no)$/i.test(v)) throw new UsageError(`${name}: expected true or false, got ${JSON.stringify(v)}`)
      out[key] = /^(1|true|yes)$/i.test(v)
    } else if (key === 'slots') out[key] = parseSlots(v, name)
    else if (key === 'remoteRetentionDays' || key === 'remoteQuotaGb') out[key] = Number(v)
    else out[key] = v
  }
  return out as OptionInput
}

export function parseSlots (v: string | number, field = '--slots'): number {
  const n = typeof v === 'number' ? v : Number(v)
  if (!Number.isInteger(n) || n < 0 || n > 1024) throw new UsageError(`${field}: expected a whole number from 0 to 1024, got ${JSON.stringify(v)}`)
  return n
}

async function fromConfigFile (path: string): Promise<OptionInput> {
  let text: string
  try { text = await readFile(path, 'utf8') } catch (err: any) {
    if (err.code === 'ENOENT') return {}
    if (err.code === 'ENOTDIR') throw new DataDirError(`data directory ${dirname(path)} is not usable: a path component is not a directory`)
    throw new ConfigError(`cannot read config file ${path}: ${err.code ?? err.message}`)
  }
  let parsed: unknown
  try { parsed = JSON.parse(text) } catch (err: any) { throw new ConfigError(`config file ${path}: ${err.message}`) }
  if (typeof parsed !== 'object' || parsed == null || Array.isArray(parsed)) throw new ConfigError(`config file ${path}: expected a JSON object`)
  const out: Record<string, unknown> = {}
  for (const [key, value] of Object.entries(parsed)) {
    if (!(key in ENV)) {
      // smtp and limits settings are read by the roles that use them
      if (key === 'smtp') continue
      throw new ConfigError(`config file ${path}: unknown key ${JSON.stringify(key)}`)
    }
    out[key] = value
  }
  return out as OptionInput
}

function checkMultiaddr (value: string, flag: string): void {
  try { multiaddr(value) } catch (err: any) { throw new UsageError(`${flag}: bad multiaddr ${JSON.stringify(value)}: ${err.message}`) }
}

export function checkHostPort (value: string, flag = '--api'): void {
  const m = /^(\[[^\]]+\]|[^:]+):(\d{1,5})$/.exec(value)
  if (m == null || Number(m[2]) > 65535) throw new UsageError(`${flag}: expected HOST:PORT, got ${JSON.stringify(value)}`)
}

export async function resolveNodeOptions (flags: OptionInput & { data?: string }, env: NodeJS.ProcessEnv = process.env): Promise<NodeOptions> {
  const data = flags.data ?? defaultDataDir(env)
  const file = await fromConfigFile(dataDirPaths(data).config)
  const merged: OptionInput = { ...file, ...fromEnv(env), ...stripUndefined(flags) }
  const opts: NodeOptions = {
    data,
    site: merged.site ?? 'default',
    listen: merged.listen != null && merged.listen.length > 0 ? merged.listen : ['/ip4/0.0.0.0/tcp/0'],
    peers: merged.peers ?? [],
    mdns: merged.mdns ?? true,
    mdnsInterface: merged.mdnsInterface,
    slots: merged.slots != null ? parseSlots(merged.slots) : availableParallelism(),
    render: merged.render ?? true,
    schedule: merged.schedule ?? true,
    api: merged.api ?? '127.0.0.1:0',
    disableRenderers: merged.disableRenderers ?? [],
    dropFolder: merged.dropFolder,
    debug: merged.debug ?? false,
    fairShare: checkWeights(merged.fairShare),
    workstation: checkWorkstation(merged.workstation),
    sleep: merged.sleep ?? [],
    allowUnsandboxed: merged.allowUnsandboxed,
    remoteRetentionDays: merged.remoteRetentionDays ?? 7,
    remoteQuotaGb: merged.remoteQuotaGb ?? 100
  }
  if (typeof opts.remoteRetentionDays !== 'number' || !(opts.remoteRetentionDays >= 0)) throw new UsageError(`--remote-retention: expected a number of days, got ${JSON.stringify(opts.remoteRetentionDays)}`)
  if (typeof opts.remoteQuotaGb !== 'number' || !(opts.remoteQuotaGb >= 0)) throw new UsageError(`--remote-quota: expected a number of GiB, got ${JSON.stringify(opts.remoteQuotaGb)}`)
  for (const s of opts.sleep) parseSleepWindow(s)
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(opts.site)) throw new UsageError(`--site: expected 1-64 letters, digits, '.', '_' or '-', got ${JSON.stringify(opts.site)}`)
  for (const l of opts.listen) checkMultiaddr(l, '--listen')
  for (const p of opts.peers) {
    checkMultiaddr(p, '--peer')
    if (!p.includes('/p2p/')) throw new UsageError(`--peer: ${p} must end with /p2p/<peer id>`)
  }
  checkHostPort(opts.api)
  return opts
}

function checkWeights (v: unknown): Record<string, number> | undefined {
  if (v === undefined) return undefined
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new ConfigError('fairShare: expected an object of weights, e.g. {"alice": 2, "bob": 1}')
  for (const [k, w] of Object.entries(v)) {
    if (typeof w !== 'number' || !(w > 0) || !Number.isFinite(w)) throw new ConfigError(`fairShare.${k}: expected a positive number`)
  }
  return v as Record<string, number>
}

function checkWorkstation (v: unknown): WorkstationOptions | undefined {
  if (v === undefined || v === false) return undefined
  const o = (v === true ? {} : v) as Record<string, unknown>
  if (typeof o !== 'object' || o === null) throw new ConfigError('workstation: expected true or an object')
  const num = (k: string, d: number): number => {
    const x = o[k] ?? d
    if (typeof x !== 'number' || !(x >= 0)) throw new UsageError(`workstation ${k}: expected a number of seconds`)
    return x
  }
  return {
    idleAfterSec: num('idleAfterSec', 300),
    graceSec: num('graceSec', 30),
    activityFile: typeof o.activityFile === 'string' ? o.activityFile : undefined,
    loadThreshold: typeof o.loadThreshold === 'number' ? o.loadThreshold : undefined
  }
}

/** `HH:MM-HH:MM` → minutes after midnight; a window may cross midnight. */
export function parseSleepWindow (s: string): { from: number, to: number } {
  const m = /^(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})$/.exec(s.trim())
  const mins = (h: string, mm: string): number => Number(h) * 60 + Number(mm)
  if (m == null || Number(m[1]) > 23 || Number(m[3]) > 24 || Number(m[2]) > 59 || Number(m[4]) > 59) throw new UsageError(`--sleep: expected HH:MM-HH:MM, got ${JSON.stringify(s)}`)
  return { from: mins(m[1], m[2]), to: mins(m[3], m[4]) }
}

function stripUndefined<T extends object> (o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>
}
