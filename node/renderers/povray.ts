/**
 * POV-Ray 3.7 adapter. One process renders the task's frames as a subset of
 * the job's animation (`+KFI/+KFF` = the job's frames, `+SF/+EF` = the task's),
 * so `clock` is each frame's own value whichever node renders which chunk.
 *
 * POV-Ray names animation frames `<prefix><frame>.png`, padding the number to
 * the digit count of the *final* frame, which our pattern can't express; it
 * renders into a scratch directory and `finalizeOutputs` renames the frames.
 */
import { mkdir, readdir, rename, rm, stat } from 'node:fs/promises'
import { extname, join, resolve } from 'node:path'
import type { CommandLine, RenderTask, RendererAdapter } from './adapter.js'
import { normalizePattern, OutputPatternError, outputName, outputPaths } from './output-names.js'

export class PovrayPathError extends Error {
  constructor (message: string) { super(message); this.name = 'PovrayPathError' }
}

const PREFIX = 'f'

/** Where POV-Ray writes before the rename; per task range so chunks don't collide. */
export function scratchDir (task: RenderTask): string {
  return join(resolve(task.outputDir), `.povray-${task.start}-${task.end}`)
}

// POV-Ray splits option values at spaces unless quoted; a quote can't be escaped.
function quoted (path: string): string {
  if (path.includes('"')) throw new PovrayPathError(`POV-Ray cannot take a path containing a double quote: ${path}`)
  return `"${path}"`
}

function positiveInt (n: number, what: string): number {
  if (!Number.isSafeInteger(n) || n <= 0) throw new RangeError(`${what} must be a positive integer, got ${n}`)
  return n
}

function checkPattern (task: RenderTask): string {
  const pattern = normalizePattern(task.outputPattern)
  if (extname(pattern).toLowerCase() !== '.png') {
    throw new OutputPatternError(`POV-Ray writes PNG here; output pattern must end in .png, got "${pattern}"`)
  }
  return pattern
}

/**
 * The animation range POV-Ray's clock runs over. A one-frame range makes
 * POV-Ray's clock NaN, so it is stretched by one frame: clock is then 0 for
 * that frame, as in a still render, and frame_number is still the frame.
 */
function clockRange (task: RenderTask): [number, number] {
  const first = task.clockStart ?? task.start
  const last = task.clockEnd ?? task.end
  return last > first ? [first, last] : [first, first + 1]
}

function commandLine (task: RenderTask): CommandLine {
  checkPattern(task)
  const [first, last] = clockRange(task)
  const args = [
    `+I${quoted(resolve(task.scene))}`,
    `+O${quoted(join(scratchDir(task), PREFIX))}`,
    '+FN',
    `+KFI${first}`, `+KFF${last}`,
    `+SF${task.start}`, `+EF${task.end}`,
    '-D', // no preview window: nodes are headless
    `+L${quoted(resolve(task.inputDir))}`
  ]
  if (task.width !== undefined) args.push(`+W${positiveInt(task.width, 'width')}`)
  if (task.height !== undefined) args.push(`+H${positiveInt(task.height, 'height')}`)
  return { file: 'povray', args, cwd: resolve(task.inputDir) }
}

/** Moves the frames POV-Ray wrote into their pattern names and drops the scratch directory. */
export async function finalizeOutputs (task: RenderTask): Promise<void> {
  const pattern = checkPattern(task)
  const dir = scratchDir(task)
  let names: string[]
  try {
    names = await readdir(dir)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return
    throw err
  }
  const re = new RegExp(`^${PREFIX}(-?\\d+)\\.png$`)
  for (const name of names) {
    const m = re.exec(name)
    if (m === null) continue
    const frame = Number(m[1])
    if (frame < task.start || frame > task.end) continue
    const from = join(dir, name)
    // An empty file is a frame POV-Ray never finished; it must not count as output.
    if ((await stat(from)).size === 0) continue
    await rename(from, join(resolve(task.outputDir), outputName(pattern, frame)))
  }
  await rm(dir, { recursive: true, force: true })
}

const FRAME_RE = /Rendering frame (\d+) of (\d+)/
const PIXELS_RE = /Rendered (\d+) of (\d+) pixels/

function frameCount (task: RenderTask): number {
  return task.end - task.start + 1
}

/**
 * `Rendering frame N of M` (N counts within the task's subset, M = task
 * frames) starts a frame; `Rendered 1024 of 3072 pixels (33%)` lines follow
 * on stderr. The pixel lines carry no frame number, hence the state.
 */
function createProgressParser (task: RenderTask): (line: string) => number | undefined {
  const count = frameCount(task)
  let index = 0
  return (line: string) => {
    const f = FRAME_RE.exec(line)
    if (f !== null) {
      index = Math.max(0, Number(f[1]) - 1)
      return Math.min(1, index / count)
    }
    const p = PIXELS_RE.exec(line)
    if (p !== null && Number(p[2]) > 0) return Math.min(1, (index + Number(p[1]) / Number(p[2])) / count)
    return undefined
  }
}

/** Without state: frame starts, and pixel counts only for one-frame tasks. */
function parseProgress (line: string, task: RenderTask): number | undefined {
  const count = frameCount(task)
  const f = FRAME_RE.exec(line)
  if (f !== null) return Math.min(1, (Number(f[1]) - 1) / count)
  const p = PIXELS_RE.exec(line)
  if (p !== null && count === 1 && Number(p[2]) > 0) return Number(p[1]) / Number(p[2])
  return undefined
}

/**
 * POV-Ray ends a failure with generic lines (`Fatal error in parser: Cannot
 * parse input.`, `Render failed`); the useful one is the `... Error: ...`
 * before them, which it wraps at 80 columns onto indented continuation lines.
 */
function errorLine (lines: string[]): string | undefined {
  for (let i = lines.length - 1; i >= 0; i--) {
    if (!/\bError:/.test(lines[i]) || /^Fatal error/i.test(lines[i])) continue
    let text = lines[i].trim()
    for (let j = i + 1; j < lines.length && /^ \S/.test(lines[j]); j++) text += ' ' + lines[j].trim()
    return text
  }
  return [...lines].reverse().find(l => /error/i.test(l))?.trim()
}

export const povrayAdapter: RendererAdapter = {
  name: 'povray',
  commandLine,
  parseProgress,
  createProgressParser,
  expectedOutputs: task => outputPaths(resolve(task.outputDir), checkPattern(task), task.start, task.end),
  async prepare (task) {
    // Start clean: leftovers of an earlier attempt must not pass for this one's frames.
    await rm(scratchDir(task), { recursive: true, force: true })
    await mkdir(scratchDir(task), { recursive: true })
  },
  finalize: finalizeOutputs,
  errorLine
}
