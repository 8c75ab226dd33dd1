/**
 * The job description (JobSpec), validated strictly at the boundary: it comes
 * from CLI flags, a JSON/YAML file or another node, and everything downstream
 * trusts it. Every error names the field it is about.
 */
import { readFile } from 'node:fs/promises'
import { readFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import YAML from 'yaml'
import { parseFrameRange, FrameRangeError } from './frame-range.js'
import { isRendererName, isVersionPattern, parseRequirement, parseRequirements, parseSize, RENDERER_NAMES, RequirementError } from './requirements.js'
import type { RendererName, Requirement } from './requirements.js'

export class JobSpecError extends Error {
  readonly field: string
  constructor (field: string, msg: string) {
    super(msg.startsWith(`${field}:`) ? msg : `${field}: ${msg}`)
    this.name = 'JobSpecError'
    this.field = field
  }
}

export interface JobSpec {
  name: string
  /** frame range as typed, e.g. `1-240:2` (validated by parseFrameRange) */
  frames: string
  /** frames per task */
  chunk: number
  renderer: { name: RendererName, version?: string }
  width?: number
  height?: number
  /** output file name; `#` runs become the zero-padded frame number */
  outputPattern: string
  /** lower is more urgent */
  priority: number
  user: string
  group: string
  /** `mailto:` or `https://` URIs */
  notify: string[]
  scene: string
  /** support files: paths or directories */
  files: string[]
  /** requirement strings, e.g. `ram>=16G` (see requirements.ts) */
  requirements: string[]
  /** `command` renderer only: argv template */
  command?: string[]
  frameTimeoutSec?: number
  maxAttempts: number
  allowScripts?: boolean
  /** jobs that must be done before this one starts */
  after?: string[]
  /** a job whose frame N must be done before this job's frame N starts */
  afterFrames?: string
  /** site-wide limits (floating licenses) each running frame holds one of */
  uses?: string[]
  /** hosts allowed to render it (peer ids, hostnames or globs); all when unset */
  hosts?: string[]
  /** hosts never to render it */
  denyHosts?: string[]
  /** at most this many hosts render it at once */
  maxHosts?: number
  /** memory a frame needs, bytes: hosts with less free are not chosen, and a frame over it is stopped */
  memory?: number
  /** for fair share between projects (default: the user) */
  project?: string
  /** outsource: a federated site's name or id, `auto` (when no local host can, or an offer is much sooner) or `never` */
  remote?: string
}

export const JOB_DEFAULTS = {
  chunk: 1,
  outputPattern: 'frame_####.png',
  priority: 50,
  maxAttempts: 3
} as const

export const PRIORITY_MIN = 0
export const PRIORITY_MAX = 1000

const FIELDS = new Set([
  'name', 'frames', 'chunk', 'renderer', 'width', 'height', 'outputPattern', 'priority', 'user', 'group',
  'notify', 'scene', 'files', 'requirements', 'command', 'frameTimeoutSec', 'maxAttempts', 'allowScripts',
  'after', 'afterFrames', 'uses', 'hosts', 'denyHosts', 'maxHosts', 'memory', 'project', 'remote'
])

const JOB_ID = /^[a-z0-9-]{4,64}$/
const NAME = /^[A-Za-z0-9._-]{1,64}$/

// Control characters have no business in names, paths or argv, and make logs lie.
const CONTROL = /[\u0000-\u001f\u007f]/

function isObject (v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

function text (v: unknown, field: string, max = 1024): string {
  if (typeof v !== 'string' || v.trim() === '' || v.length > max || CONTROL.test(v)) {
    throw new JobSpecError(field, `must be a non-empty string of at most ${max} characters without control characters`)
  }
  return v
}

function int (v: unknown, field: string, min: number, max: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) throw new JobSpecError(field, `must be an integer from ${min} to ${max}`)
  return v
}

/** A list field; a lone string is accepted as a one-item list (handy in YAML and on the CLI). */
function list (v: unknown, field: string, max: number, item: (x: unknown, field: string) => string): string[] {
  const a = typeof v === 'string' ? [v] : v
  if (!Array.isArray(a) || a.length > max) throw new JobSpecError(field, `must be a list of at most ${max} strings`)
  return a.map((x, i) => item(x, `${field}[${i}]`))
}

function renderer (v: unknown): JobSpec['renderer'] {
  let name: unknown
  let version: unknown
  if (typeof v === 'string') {
    const at = v.indexOf('@')
    name = at < 0 ? v : v.slice(0, at)
    version = at < 0 ? undefined : v.slice(at + 1)
  } else if (isObject(v)) {
    for (const k of Object.keys(v)) {
      if (k !== 'name' && k !== 'version') throw new JobSpecError(`renderer.${k}`, 'unknown field')
    }
    name = v.name
    version = v.version
  } else {
    throw new JobSpecError('renderer', 'must be a renderer name like "povray", "povray@3.7" or { name, version }')
  }
  if (typeof name !== 'string' || !isRendererName(name.trim().toLowerCase())) {
    throw new JobSpecError('renderer', `unknown renderer ${JSON.stringify(name)} (expected one of ${RENDERER_NAMES.join(', ')})`)
  }
  const out: JobSpec['renderer'] = { name: name.trim().toLowerCase() as RendererName }
  if (version !== undefined) {
    // A number here is a trap: 3.10 would arrive as 3.1.
    if (typeof version !== 'string') throw new JobSpecError('renderer.version', 'must be a string (quote it: "3.10")')
    if (!isVersionPattern(version.trim())) throw new JobSpecError('renderer.version', `bad version pattern "${version}": expected e.g. 3.7, 3.x, 3.* or *`)
    out.version = version.trim()
  }
  return out
}

function jobRef (v: unknown, field: string): string {
  const s = text(v, field, 64).trim()
  if (!JOB_ID.test(s)) throw new JobSpecError(field, `"${s}" is not a job id`)
  return s
}

function nameOf (v: unknown, field: string): string {
  const s = text(v, field, 64).trim()
  if (!NAME.test(s)) throw new JobSpecError(field, `"${s}" must be 1-64 letters, digits, '.', '_' or '-'`)
  return s
}

function memoryOf (v: unknown): number {
  const n = typeof v === 'number' ? v : typeof v === 'string' ? parseSize(v.trim()) : undefined
  if (n === undefined || !Number.isFinite(n) || n <= 0 || n > 2 ** 50) throw new JobSpecError('memory', 'must be a size like 4G, 512M or a number of bytes')
  return Math.round(n)
}

const LOOPBACK = new Set(['127.0.0.1', 'localhost', '[::1]'])

function notifyTarget (v: unknown, field: string): string {
  const s = text(v, field, 2048).trim()
  let u: URL
  try {
    u = new URL(s)
  } catch {
    throw new JobSpecError(field, `not a URI: "${s}" (expected mailto: or https://)`)
  }
  if (u.protocol === 'mailto:') {
    if (!/^[^@\s,]+@[^@\s,]+$/.test(decodeURIComponent(u.pathname))) throw new JobSpecError(field, `bad mail address in "${s}"`)
    return s
  }
  if (u.protocol === 'https:' || (u.protocol === 'http:' && LOOPBACK.has(u.hostname))) {
    if (u.hostname === '') throw new JobSpecError(field, `missing host in "${s}"`)
    return s
  }
  if (u.protocol === 'http:') throw new JobSpecError(field, `plain http:// is only allowed for loopback hosts; use https:// ("${s}")`)
  throw new JobSpecError(field, `unsupported scheme ${u.protocol} in "${s}" (expected mailto: or https://)`)
}

function outputPattern (v: unknown): string {
  const s = text(v, 'outputPattern', 255)
  // It is a file name inside the task's output directory, never a path.
  if (/[/\\]/.test(s) || s === '.' || s === '..') throw new JobSpecError('outputPattern', 'must be a file name, not a path')
  if (!s.includes('#')) throw new JobSpecError('outputPattern', 'must contain # for the frame number, e.g. frame_####.png')
  return s
}

/** The current OS user and primary group name, recorded on jobs. */
export function osUserAndGroup (): { user: string, group: string } {
  let user = 'unknown'
  let gid: number | undefined
  try {
    const info = os.userInfo()
    user = info.username
    gid = info.gid >= 0 ? info.gid : undefined
  } catch {
    user = process.env.USER ?? process.env.USERNAME ?? 'unknown'
  }
  let group = gid === undefined ? (process.env.USERDOMAIN ?? 'users') : String(gid)
  if (gid !== undefined) {
    try {
      // Node has no getgrgid(); /etc/group is where POSIX hosts keep the name.
      for (const line of readFileSync('/etc/group', 'utf8').split('\n')) {
        const [name, , id] = line.split(':')
        if (id !== undefined && Number(id) === gid && name !== '') { group = name; break }
      }
    } catch { /* keep the numeric gid */ }
  }
  return { user, group }
}

/**
 * Validate an untrusted job description and fill in defaults. `defaults`
 * supplies the recorded user/group when the input has none (else the OS's).
 */
export function validateJobSpec (input: unknown, defaults?: { user?: string, group?: string }): JobSpec {
  if (!isObject(input)) throw new JobSpecError('spec', 'must be an object')
  for (const k of Object.keys(input)) {
    if (!FIELDS.has(k)) throw new JobSpecError(k, 'unknown field')
  }
  const has = (k: string): boolean => input[k] !== undefined && input[k] !== null

  if (!has('name')) throw new JobSpecError('name', 'is required')
  const name = text(input.name, 'name', 200).trim()

  if (!has('frames')) throw new JobSpecError('frames', 'is required')
  const framesIn = typeof input.frames === 'number' && Number.isInteger(input.frames) ? String(input.frames) : input.frames
  if (typeof framesIn !== 'string') throw new JobSpecError('frames', 'must be a frame range like 1-240, 1-240:2 or 1,5,9-12')
  try {
    parseFrameRange(framesIn)
  } catch (err) {
    if (err instanceof FrameRangeError) throw new JobSpecError('frames', err.message)
    throw err
  }

  if (!has('renderer')) throw new JobSpecError('renderer', 'is required')
  const r = renderer(input.renderer)

  if (!has('scene')) throw new JobSpecError('scene', 'is required')
  const scene = text(input.scene, 'scene', 4096)

  const requirements = has('requirements') ? list(input.requirements, 'requirements', 100, (x, f) => text(x, f, 512).trim()) : []
  requirements.forEach((req, i) => {
    try {
      parseRequirement(req)
    } catch (err) {
      if (err instanceof RequirementError) throw new JobSpecError(`requirements[${i}]`, err.message)
      throw err
    }
  })

  let command: string[] | undefined
  if (r.name === 'command') {
    if (!has('command')) throw new JobSpecError('command', 'is required for the command renderer (an argv list)')
    if (!Array.isArray(input.command) || input.command.length === 0 || input.command.length > 1000) {
      throw new JobSpecError('command', 'must be a non-empty list of argv strings (no shell)')
    }
    command = input.command.map((x, i) => {
      if (typeof x !== 'string' || x.length > 4096 || CONTROL.test(x)) throw new JobSpecError(`command[${i}]`, 'must be a string without control characters')
      return x
    })
    if (command[0].trim() === '') throw new JobSpecError('command[0]', 'must name the program')
  } else if (has('command')) {
    throw new JobSpecError('command', `only valid with the command renderer, not ${r.name}`)
  }

  const fallback = (defaults?.user === undefined || defaults?.group === undefined) && (!has('user') || !has('group'))
    ? osUserAndGroup()
    : undefined
  const spec: JobSpec = {
    name,
    frames: framesIn.trim(),
    chunk: has('chunk') ? int(input.chunk, 'chunk', 1, 100_000) : JOB_DEFAULTS.chunk,
    renderer: r,
    outputPattern: has('outputPattern') ? outputPattern(input.outputPattern) : JOB_DEFAULTS.outputPattern,
    priority: has('priority') ? int(input.priority, 'priority', PRIORITY_MIN, PRIORITY_MAX) : JOB_DEFAULTS.priority,
    user: text(has('user') ? input.user : defaults?.user ?? fallback?.user, 'user', 256),
    group: text(has('group') ? input.group : defaults?.group ?? fallback?.group, 'group', 256),
    notify: has('notify') ? list(input.notify, 'notify', 20, notifyTarget) : [],
    scene,
    files: has('files') ? list(input.files, 'files', 10_000, (x, f) => text(x, f, 4096)) : [],
    requirements,
    maxAttempts: has('maxAttempts') ? int(input.maxAttempts, 'maxAttempts', 1, 100) : JOB_DEFAULTS.maxAttempts
  }
  if (has('width')) spec.width = int(input.width, 'width', 1, 65536)
  if (has('height')) spec.height = int(input.height, 'height', 1, 65536)
  if (command !== undefined) spec.command = command
  if (has('frameTimeoutSec')) {
    const t = input.frameTimeoutSec
    if (typeof t !== 'number' || !Number.isFinite(t) || t <= 0 || t > 7 * 24 * 3600) {
      throw new JobSpecError('frameTimeoutSec', `must be a number of seconds above 0 and at most ${7 * 24 * 3600}`)
    }
    spec.frameTimeoutSec = t
  }
  if (has('after')) spec.after = list(input.after, 'after', 100, (x, f) => jobRef(x, f))
  if (has('afterFrames')) spec.afterFrames = jobRef(input.afterFrames, 'afterFrames')
  if (has('uses')) spec.uses = list(input.uses, 'uses', 20, (x, f) => nameOf(x, f))
  if (has('hosts')) spec.hosts = list(input.hosts, 'hosts', 1000, (x, f) => text(x, f, 256).trim())
  if (has('denyHosts')) spec.denyHosts = list(input.denyHosts, 'denyHosts', 1000, (x, f) => text(x, f, 256).trim())
  if (has('maxHosts')) spec.maxHosts = int(input.maxHosts, 'maxHosts', 1, 100_000)
  if (has('memory')) spec.memory = memoryOf(input.memory)
  if (has('project')) spec.project = nameOf(input.project, 'project')
  if (has('remote')) spec.remote = text(input.remote, 'remote', 128).trim()
  if (has('allowScripts')) {
    if (typeof input.allowScripts !== 'boolean') throw new JobSpecError('allowScripts', 'must be true or false')
    spec.allowScripts = input.allowScripts
  }
  return spec
}

/**
 * Everything a host must offer to run the job: its renderer (at the version
 * pattern, if any) plus the spec's own requirements.
 */
export function jobRequirements (spec: JobSpec): Requirement[] {
  const own = parseRequirements(spec.requirements)
  const renderer = parseRequirement(spec.renderer.version === undefined
    ? `renderer=${spec.renderer.name}`
    : `${spec.renderer.name}=${spec.renderer.version}`)
  return [renderer, ...own]
}

/** YAML scalars under these keys are kept as typed: `version: 3.10` must stay "3.10". */
const KEEP_AS_TEXT = new Set(['version', 'frames'])

function parseYaml (src: string): unknown {
  const doc = YAML.parseDocument(src, { prettyErrors: true })
  if (doc.errors.length > 0) throw doc.errors[0]
  YAML.visit(doc, {
    Pair (_, pair) {
      if (YAML.isScalar(pair.key) && KEEP_AS_TEXT.has(String(pair.key.value)) &&
          YAML.isScalar(pair.value) && typeof pair.value.value === 'number' && pair.value.source !== undefined) {
        pair.value.value = pair.value.source
      }
    }
  })
  return doc.toJS()
}

/**
 * Read a job description file (JSON, or YAML for .yaml/.yml) for
 * validateJobSpec. `scene` and `files` are resolved against the file's own
 * directory, so a spec can sit next to its scene.
 */
export async function loadJobSpecFile (file: string): Promise<unknown> {
  const ext = path.extname(file).toLowerCase()
  if (ext !== '.json' && ext !== '.yaml' && ext !== '.yml') {
    throw new JobSpecError('file', `${file}: expected a .json, .yaml or .yml file`)
  }
  let src: string
  try {
    src = await readFile(file, 'utf8')
  } catch (err) {
    throw new JobSpecError('file', `cannot read ${file}: ${(err as Error).message}`)
  }
  let data: unknown
  try {
    data = ext === '.json' ? JSON.parse(src) : parseYaml(src)
  } catch (err) {
    throw new JobSpecError('file', `cannot parse ${file}: ${(err as Error).message}`)
  }
  if (!isObject(data)) return data
  const dir = path.dirname(path.resolve(file))
  const resolve = (p: unknown): unknown => typeof p === 'string' && p !== '' ? path.resolve(dir, p) : p
  const out: Record<string, unknown> = { ...data }
  if ('scene' in out) out.scene = resolve(out.scene)
  if ('files' in out) out.files = Array.isArray(out.files) ? out.files.map(resolve) : resolve(out.files)
  return out
}
