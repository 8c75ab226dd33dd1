/**
 * Adapter for any renderer given as an argv template (`task.command`). It is
 * run as is, without a shell, one process per task: a `;` or `$(...)` in an
 * argument is just text. Placeholders, replaced anywhere inside an argument
 * (the first argument is the program):
 *
 *   {frame}   the task's first frame (same as {start}; a chunk is one process)
 *   {start}   first frame of the task
 *   {end}     last frame of the task
 *   {output}  absolute output path of the task's first frame; a chunk's
 *             command must write the others itself, see {pattern}
 *   {pattern} absolute output path with the `#` run(s) kept, for renderers
 *             that number their own frames
 *   {outdir}  the output directory
 *   {scene}   the scene file
 *
 * Any other `{...}` is left alone. Progress: lines `PROGRESS 0.5` (fraction
 * of the task) or containing `NN%`.
 */
import { join, resolve } from 'node:path'
import type { CommandLine, RenderTask, RendererAdapter } from './adapter.js'
import { normalizePattern, outputName, outputPaths } from './output-names.js'

export class CommandTemplateError extends Error {
  constructor (message: string) { super(message); this.name = 'CommandTemplateError' }
}

const PLACEHOLDER = /\{(frame|start|end|output|pattern|outdir|scene)\}/g

/** The template with placeholders filled in; one pass, so filled-in text is never re-read. */
export function expandTemplate (template: string[], task: RenderTask): string[] {
  const outdir = resolve(task.outputDir)
  const pattern = normalizePattern(task.outputPattern)
  const values: Record<string, string> = {
    frame: String(task.start),
    start: String(task.start),
    end: String(task.end),
    output: join(outdir, outputName(pattern, task.start)),
    pattern: join(outdir, pattern),
    outdir,
    scene: resolve(task.scene)
  }
  return template.map(arg => arg.replace(PLACEHOLDER, (_, key: string) => values[key]))
}

function commandLine (task: RenderTask): CommandLine {
  const template = task.command
  if (template === undefined || template.length === 0 || template[0] === '') {
    throw new CommandTemplateError('the command renderer needs a non-empty argv template (task.command)')
  }
  const [file, ...args] = expandTemplate(template, task)
  return { file, args, cwd: resolve(task.inputDir) }
}

const PROGRESS_RE = /^\s*PROGRESS\s+([0-9]*\.?[0-9]+(?:e-?\d+)?)\s*$/i
const PERCENT_RE = /(\d{1,3}(?:\.\d+)?)\s*%/

function parseProgress (line: string): number | undefined {
  const p = PROGRESS_RE.exec(line)
  if (p !== null) return Math.min(1, Math.max(0, Number(p[1])))
  const pc = PERCENT_RE.exec(line)
  if (pc !== null && Number(pc[1]) <= 100) return Number(pc[1]) / 100
  return undefined
}

export const commandAdapter: RendererAdapter = {
  name: 'command',
  commandLine,
  parseProgress,
  expectedOutputs: task => outputPaths(resolve(task.outputDir), normalizePattern(task.outputPattern), task.start, task.end)
}
