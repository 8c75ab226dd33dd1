/**
 * Job requirements against host fingerprints (the patent's resource profile).
 * A requirement names one fingerprint field and how it must look; a field a
 * job does not name is "don't care". Requirements stay plain JSON objects
 * (`{ key, op, value }`) because they travel between nodes.
 */
import type { Fingerprint } from '../fingerprint-types.js'

export class RequirementError extends Error {
  constructor (msg: string) {
    super(msg)
    this.name = 'RequirementError'
  }
}

export const RENDERER_NAMES = ['blender', 'povray', 'command', 'builtin'] as const
export type RendererName = typeof RENDERER_NAMES[number]

export function isRendererName (s: string): s is RendererName {
  return (RENDERER_NAMES as readonly string[]).includes(s)
}

export type RequirementOp = '=' | '>=' | '>' | '<=' | '<'

/**
 * `key` is canonical (aliases resolved, lower case). `value` is a number
 * (bytes, MHz, counts) for numeric keys and a string (glob, version pattern,
 * license or renderer name) otherwise. A renderer name as key (`blender`)
 * means "this renderer, with a version matching value".
 */
export interface Requirement {
  key: string
  op: RequirementOp
  value: string | number
}

type Kind = 'string' | 'version' | 'count' | 'bytes' | 'mhz' | 'license' | 'renderer' | 'gpu'

interface KeyDef {
  kind: Kind
  /** the fingerprint's value(s) for this key */
  get: (fp: Fingerprint) => string | number | string[]
}

const KEYS: Record<string, KeyDef> = {
  hostname: { kind: 'string', get: fp => fp.hostname },
  'os.family': { kind: 'string', get: fp => fp.os.family },
  'os.type': { kind: 'string', get: fp => fp.os.type },
  'os.version': { kind: 'version', get: fp => fp.os.version },
  'os.release': { kind: 'version', get: fp => fp.os.release },
  'machine.vendor': { kind: 'string', get: fp => fp.machine.vendor },
  'machine.model': { kind: 'string', get: fp => fp.machine.model },
  'machine.family': { kind: 'string', get: fp => fp.machine.family },
  'machine.type': { kind: 'string', get: fp => fp.machine.type },
  'cpu.family': { kind: 'string', get: fp => fp.cpu.family },
  'cpu.model': { kind: 'string', get: fp => fp.cpu.model },
  cpus: { kind: 'count', get: fp => fp.cpu.count },
  'cpu.speed': { kind: 'mhz', get: fp => fp.cpu.speedMHz },
  ram: { kind: 'bytes', get: fp => fp.ram.total },
  'ram.free': { kind: 'bytes', get: fp => fp.ram.free },
  swap: { kind: 'bytes', get: fp => fp.swap.total },
  'swap.free': { kind: 'bytes', get: fp => fp.swap.free },
  gpus: { kind: 'count', get: fp => fp.gpus.length },
  gpu: { kind: 'gpu', get: fp => fp.gpus.map(g => g.model) },
  'gpu.vendor': { kind: 'gpu', get: fp => fp.gpus.map(g => g.vendor) },
  license: { kind: 'license', get: fp => fp.licenses },
  renderer: { kind: 'renderer', get: fp => fp.renderers.map(r => r.name) }
}
for (const name of RENDERER_NAMES) {
  KEYS[name] = { kind: 'version', get: fp => fp.renderers.filter(r => r.name.toLowerCase() === name).map(r => r.version) }
}

/** The canonical keys a requirement may name. */
export const REQUIREMENT_KEYS: readonly string[] = Object.keys(KEYS)

/** Other spellings users reach for; mapped to the canonical key. */
const ALIASES: Record<string, string> = {
  'cpu.count': 'cpus',
  'cpu.speedmhz': 'cpu.speed',
  'ram.total': 'ram',
  'swap.total': 'swap',
  'gpu.model': 'gpu',
  'gpu.count': 'gpus',
  licenses: 'license',
  renderers: 'renderer'
}

const NUMERIC: readonly Kind[] = ['count', 'bytes', 'mhz']

// ---------------------------------------------------------------- versions

const VERSION_PATTERN = /^(?:\*|[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_*-]+)*)$/

/** Whether `s` is a usable version pattern (`*`, `6`, `6.5`, `6.x`, `6.*`, `3.7.0`). */
export function isVersionPattern (s: string): boolean {
  return VERSION_PATTERN.test(s) && s.split('.').every(c => c === '*' || !c.includes('*'))
}

function isWild (c: string): boolean {
  return c === '*' || c === 'x' || c === 'X'
}

/** Compare two version components: numerically by their leading digits, else as text. */
function compareComponent (a: string, b: string): number {
  const na = /^\d+/.exec(a)
  const nb = /^\d+/.exec(b)
  if (na !== null && nb !== null) {
    const d = Number(na[0]) - Number(nb[0])
    if (d !== 0) return Math.sign(d)
    // `0-21-generic` vs `0`: the numeric parts agree; treat as equal.
    if (a.length === na[0].length || b.length === nb[0].length) return 0
  }
  const la = a.toLowerCase()
  const lb = b.toLowerCase()
  return la < lb ? -1 : la > lb ? 1 : 0
}

function splitVersion (v: string): string[] {
  return v.trim().split(/[.\s]/).filter(c => c !== '')
}

/**
 * Whether `version` matches `pattern`. Components are compared numerically
 * (`04` = `4`); `x`/`*` match any component; a shorter pattern is a prefix
 * match (`6.5` matches `6.5.3`); a component missing from the version counts
 * as 0 (`3.7` matches `3.7.0`).
 */
export function versionMatches (version: string, pattern: string): boolean {
  const p = splitVersion(pattern)
  if (p.length === 0 || (p.length === 1 && p[0] === '*')) return true
  const v = splitVersion(version)
  if (v.length === 0) return false
  return p.every((pc, i) => isWild(pc) || compareComponent(v[i] ?? '0', pc) === 0)
}

/** Order two versions (for `>=` and friends): negative when a < b. Missing components count as 0. */
export function compareVersions (a: string, b: string): number {
  const va = splitVersion(a)
  const vb = splitVersion(b)
  for (let i = 0; i < Math.max(va.length, vb.length); i++) {
    const d = compareComponent(va[i] ?? '0', vb[i] ?? '0')
    if (d !== 0) return d
  }
  return 0
}

// ---------------------------------------------------------------- values

const SIZE = /^(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?b)?$/i
const UNITS: Record<string, number> = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4, p: 1024 ** 5 }

/** `16G`, `512M`, `1.5T`, `16GiB`, `1024` → bytes (binary multiples). */
export function parseSize (s: string): number | undefined {
  const m = SIZE.exec(s.trim())
  if (m === null) return undefined
  const n = Math.round(Number(m[1]) * UNITS[m[2].toLowerCase()])
  return Number.isSafeInteger(n) ? n : undefined
}

function parseMHz (s: string): number | undefined {
  const m = /^(\d+(?:\.\d+)?)\s*(mhz|ghz)?$/i.exec(s.trim())
  if (m === null) return undefined
  // Whole MHz: `3.2GHz` must not become 3200.0000000000005.
  return Math.round(Number(m[1]) * (m[2]?.toLowerCase() === 'ghz' ? 1000 : 1))
}

function parseCount (s: string): number | undefined {
  return /^\d+$/.test(s.trim()) && Number.isSafeInteger(Number(s)) ? Number(s) : undefined
}

/** `17179869184` → `16.0 GiB`. */
export function formatBytes (n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB']
  let u = 0
  let v = n
  while (v >= 1024 && u < units.length - 1) { v /= 1024; u++ }
  return u === 0 ? `${n} B` : `${v.toFixed(1)} ${units[u]}`
}

function formatValue (kind: Kind, v: string | number): string {
  if (typeof v === 'string') return v
  if (kind === 'bytes') return formatBytes(v)
  if (kind === 'mhz') return `${v} MHz`
  return String(v)
}

/** Case-insensitive whole-string match with `*` as "anything". */
export function globMatches (s: string, glob: string): boolean {
  const re = glob.split('*').map(p => p.replace(/[\\^$.|?+()[\]{}]/g, '\\$&')).join('.*')
  return new RegExp(`^${re}$`, 'is').test(s)
}

// ---------------------------------------------------------------- parsing

const REQ = /^\s*([A-Za-z][A-Za-z0-9._-]*)\s*(>=|<=|==|=|>|<)\s*(.*?)\s*$/
const NAME = /^[A-Za-z0-9*][A-Za-z0-9._+*-]*$/

function canonicalKey (raw: string): string {
  const k = raw.toLowerCase()
  return ALIASES[k] ?? k
}

/**
 * Parse one requirement: `KEY=PATTERN`, `KEY>=VALUE` (also `>`, `<=`, `<`),
 * `license=NAME`, `renderer=blender` (any version), `renderer=blender@3.x`,
 * `blender=3.x`. Throws RequirementError naming the requirement and why.
 */
export function parseRequirement (s: string): Requirement {
  if (typeof s !== 'string') throw new RequirementError('requirement must be a string')
  const fail = (why: string): never => { throw new RequirementError(`requirement "${s}": ${why}`) }
  const m = REQ.exec(s)
  if (m === null) return fail('expected KEY=VALUE or KEY>=VALUE')
  let key = canonicalKey(m[1])
  const op = (m[2] === '==' ? '=' : m[2]) as RequirementOp
  let raw = m[3]
  let def = KEYS[key]
  if (def === undefined) return fail(`unknown key "${m[1]}" (known: ${Object.keys(KEYS).join(', ')})`)
  if (raw === '') return fail('missing value')

  if (def.kind === 'renderer') {
    if (op !== '=') return fail(`${key} only supports =`)
    const at = raw.indexOf('@')
    const name = (at < 0 ? raw : raw.slice(0, at)).toLowerCase()
    if (!isRendererName(name)) return fail(`unknown renderer "${name}" (known: ${RENDERER_NAMES.join(', ')})`)
    if (at < 0) return { key, op, value: name }
    // `renderer=blender@3.x` is the same requirement as `blender=3.x`.
    key = name
    raw = raw.slice(at + 1)
    def = KEYS[key]
  }

  if (NUMERIC.includes(def.kind)) {
    const value = def.kind === 'bytes' ? parseSize(raw) : def.kind === 'mhz' ? parseMHz(raw) : parseCount(raw)
    if (value === undefined) {
      const expected = def.kind === 'bytes' ? 'a size like 16G (K/M/G/T suffixes, binary)' : def.kind === 'mhz' ? 'a speed in MHz like 3000' : 'a whole number'
      return fail(`bad value "${raw}" for ${key}: expected ${expected}`)
    }
    return { key, op, value }
  }

  if (def.kind === 'version') {
    if (!isVersionPattern(raw)) return fail(`bad version pattern "${raw}" for ${key}: expected e.g. 6.5, 6.x, 6.* or *`)
    if (op !== '=' && raw.split('.').some(isWild)) return fail(`${op} needs a plain version, not the pattern "${raw}"`)
    return { key, op, value: raw }
  }

  // strings, gpus, licenses: exact or glob only
  if (op !== '=') return fail(`${key} only supports = (with * as a wildcard)`)
  if (def.kind === 'license') {
    if (!NAME.test(raw)) return fail(`bad license name "${raw}" (one name per requirement)`)
    return { key, op, value: raw }
  }
  if (/[\u0000-\u001f]/.test(raw) || raw.length > 256) return fail('bad value')
  return { key, op, value: raw }
}

/** Parse a list of requirement strings; the first bad one throws. */
export function parseRequirements (list: string[]): Requirement[] {
  return list.map(parseRequirement)
}

/** The requirement as a string that parseRequirement turns back into it. */
export function formatRequirement (r: Requirement): string {
  return `${r.key}${r.op}${r.value}`
}

/**
 * Check a requirement object that arrived from elsewhere (e.g. the network):
 * it must be one parseRequirement could have produced.
 */
export function validateRequirement (x: unknown): Requirement {
  if (typeof x !== 'object' || x === null) throw new RequirementError('requirement must be an object')
  const { key, op, value } = x as Record<string, unknown>
  if (typeof key !== 'string' || typeof op !== 'string' || (typeof value !== 'string' && typeof value !== 'number')) {
    throw new RequirementError('requirement must be { key, op, value }')
  }
  const r = parseRequirement(`${key}${op}${value}`)
  if (r.key !== key || r.op !== op || r.value !== value) throw new RequirementError(`requirement "${key}${op}${value}" is not canonical`)
  return r
}

// ---------------------------------------------------------------- matching

function compare (a: number, op: RequirementOp, b: number): boolean {
  switch (op) {
    case '=': return a === b
    case '>=': return a >= b
    case '>': return a > b
    case '<=': return a <= b
    case '<': return a < b
  }
}

const NEGATED: Record<RequirementOp, string> = { '=': '!=', '>=': '<', '>': '<=', '<=': '>', '<': '>=' }

/** Why `fp` fails `r`, or undefined when it satisfies it. */
function mismatch (fp: Fingerprint, r: Requirement): string | undefined {
  const def = KEYS[r.key]
  if (def === undefined) return `unknown requirement key "${r.key}"`
  const actual = def.get(fp)

  if (NUMERIC.includes(def.kind)) {
    if (typeof actual !== 'number' || typeof r.value !== 'number') return `${r.key}: malformed requirement`
    if (compare(actual, r.op, r.value)) return undefined
    return `${r.key} ${formatValue(def.kind, actual)} ${NEGATED[r.op]} required ${formatValue(def.kind, r.value)}`
  }

  const want = String(r.value)
  switch (def.kind) {
    case 'string': {
      if (globMatches(String(actual), want)) return undefined
      return `${r.key} "${String(actual)}" does not match "${want}"`
    }
    case 'gpu': {
      const have = actual as string[]
      if (want === '*' || have.some(g => globMatches(g, want))) return undefined
      return `${r.key}: no GPU matches "${want}" (have: ${have.length > 0 ? have.join(', ') : 'none'})`
    }
    case 'license': {
      const have = actual as string[]
      if (have.some(l => globMatches(l, want))) return undefined
      return `license "${want}" not available`
    }
    case 'renderer': {
      const have = actual as string[]
      if (have.some(n => n.toLowerCase() === want.toLowerCase())) return undefined
      return `renderer ${want} not installed`
    }
    case 'version': {
      // os.version is one string; a renderer key may list several installed versions.
      const have = Array.isArray(actual) ? actual : [String(actual)]
      const ok = (v: string): boolean => r.op === '=' ? versionMatches(v, want) : compare(compareVersions(v, want), r.op, 0)
      if (want === '*' && r.op === '=' && !Array.isArray(actual)) return undefined
      if (have.some(ok)) return undefined
      if (have.length === 0) return `${r.key} not installed`
      const req = r.op === '=' ? `required ${want}` : `required ${r.op} ${want}`
      return `${r.key} ${have.join(', ')} does not match ${req}`
    }
    default:
      return `${r.key}: malformed requirement`
  }
}

/** Whether the host satisfies every requirement (no requirements: any host). */
export function matchesRequirements (fp: Fingerprint, reqs: Requirement[]): boolean {
  return explainMismatch(fp, reqs) === undefined
}

/** Human text for the first requirement the host fails, e.g. `ram 8.0 GiB < required 16.0 GiB`. */
export function explainMismatch (fp: Fingerprint, reqs: Requirement[]): string | undefined {
  for (const r of reqs) {
    const why = mismatch(fp, r)
    if (why !== undefined) return why
  }
  return undefined
}
