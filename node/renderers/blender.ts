/**
 * Blender adapter (tested with 3.4, Cycles on CPU). Blender names frames
 * itself from `-o`: the last `#` run becomes the zero-padded frame number, so
 * the pattern is passed through as is.
 *
 * What Blender 3.4 prints on stdout while rendering (one line per update):
 *   Fra:1 Mem:9.50M (Peak 10.20M) | Time:00:00.02 | ... | Scene, ViewLayer | Sample 1/8
 *   Fra:1 ... | Scene, ViewLayer | Rendered 1/4 Tiles, Sample 8/8      (tiled renders)
 *   Fra:1 ... | Rendering 1 / 4 samples                                 (Eevee)
 *   Fra:1 ... | Scene, ViewLayer | Finished
 *   Saved: '/out/frame_0001.png'
 * Failures: `Error: ...` on stdout (e.g. `Error: Build without OpenImageDenoiser`
 * when a scene asks for denoising on a build without OIDN), exit code 1.
 */
import { extname, join, resolve } from 'node:path'
import type { CommandLine, RenderTask, RendererAdapter } from './adapter.js'
import { hashRuns, normalizePattern, OutputPatternError, outputPaths } from './output-names.js'

function checkPattern (task: RenderTask): string {
  const pattern = normalizePattern(task.outputPattern)
  if (hashRuns(pattern) !== 1) {
    throw new OutputPatternError(`Blender fills only one # run; output pattern "${pattern}" has ${hashRuns(pattern)}`)
  }
  // Blender appends its own extension when the name's doesn't match the format.
  if (extname(pattern).toLowerCase() !== '.png') {
    throw new OutputPatternError(`Blender writes PNG here; output pattern must end in .png, got "${pattern}"`)
  }
  return pattern
}

function positiveInt (n: number, what: string): number {
  if (!Number.isSafeInteger(n) || n <= 0) throw new RangeError(`${what} must be a positive integer, got ${n}`)
  return n
}

/** Python run after the file is loaded: ours, so it runs even with --disable-autoexec. */
function resolutionExpr (task: RenderTask): string | undefined {
  if (task.width === undefined && task.height === undefined) return undefined
  const lines = ['import bpy', 'r = bpy.context.scene.render']
  if (task.width !== undefined) lines.push(`r.resolution_x = ${positiveInt(task.width, 'width')}`)
  if (task.height !== undefined) lines.push(`r.resolution_y = ${positiveInt(task.height, 'height')}`)
  lines.push('r.resolution_percentage = 100')
  return lines.join('; ')
}

function commandLine (task: RenderTask): CommandLine {
  const pattern = checkPattern(task)
  const args = ['-b']
  // Before the file, so no code in it (drivers, registered text blocks) runs while it loads.
  // Allowed scripts need --enable-autoexec: Blender's own default is off.
  args.push(task.allowScripts === true ? '--enable-autoexec' : '--disable-autoexec')
  args.push(resolve(task.scene))
  const expr = resolutionExpr(task)
  if (expr !== undefined) args.push('--python-expr', expr)
  args.push(
    '-o', join(resolve(task.outputDir), pattern),
    '-F', 'PNG',
    '-s', String(task.start), '-e', String(task.end),
    '-j', '1', // the file's own frame step would skip frames this task must produce
    '-a'
  )
  return { file: 'blender', args, cwd: resolve(task.inputDir) }
}

const FRA_RE = /^Fra:(-?\d+)\s/
const TILES_RE = /Rendered (\d+)\/(\d+) Tiles, Sample (\d+)\/(\d+)/
const SAMPLE_RE = /(?:Path Tracing )?Sample (\d+)\/(\d+)/
const EEVEE_RE = /Rendering (\d+) \/ (\d+) samples/
const SAVED_RE = /^Saved: '(.*)'/

/** Fraction of the current frame done, from the part of a `Fra:` line after the memory stats. */
function frameFraction (line: string): number {
  const t = TILES_RE.exec(line)
  if (t !== null) {
    const [done, tiles, sample, samples] = t.slice(1).map(Number)
    // `Rendered 1/4 Tiles, Sample 8/8` is also printed once tile 2 is done sampling
    // but not yet counted; ignoring full sample counts never runs ahead.
    const partial = samples > 0 && sample < samples ? sample / samples : 0
    return tiles > 0 ? (done + partial) / tiles : 0
  }
  const s = SAMPLE_RE.exec(line) ?? EEVEE_RE.exec(line)
  if (s !== null) return Number(s[2]) > 0 ? Number(s[1]) / Number(s[2]) : 0
  if (/\|\s*Finished\s*$/.test(line)) return 1
  return 0
}

function parseProgress (line: string, task: RenderTask): number | undefined {
  const count = task.end - task.start + 1
  const fra = FRA_RE.exec(line)
  if (fra !== null) {
    const index = Number(fra[1]) - task.start
    if (index < 0 || index >= count) return undefined
    return Math.min(1, (index + frameFraction(line)) / count)
  }
  const saved = SAVED_RE.exec(line)
  if (saved !== null) {
    const index = outputPaths(resolve(task.outputDir), checkPattern(task), task.start, task.end).indexOf(saved[1])
    return index < 0 ? undefined : (index + 1) / count
  }
  return undefined
}

export const blenderAdapter: RendererAdapter = {
  name: 'blender',
  commandLine,
  parseProgress,
  expectedOutputs: task => outputPaths(resolve(task.outputDir), checkPattern(task), task.start, task.end)
}
