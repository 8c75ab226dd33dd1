/**
 * Adapter for the built-in renderer, run as its own process (builtin-cli) so
 * it is measured and killed like any other renderer:
 *
 *   node <builtinCli> --scene S --start N --end M --output-dir D --pattern P [--width W --height H]
 *
 * It prints `PROGRESS <frame> <fraction>` and `SAVED <path>` on stdout and
 * `error: <message>` on stderr when it fails.
 */
import { resolve } from 'node:path'
import type { CommandLine, RenderTask, RendererAdapter } from './adapter.js'
import { normalizePattern, outputPaths } from './output-names.js'

const PROGRESS_RE = /^PROGRESS (-?\d+) ([0-9]*\.?[0-9]+)\s*$/

export function builtinAdapter (builtinCli: string): RendererAdapter {
  const cli = resolve(builtinCli)
  return {
    name: 'builtin',
    commandLine (task: RenderTask): CommandLine {
      const args = [
        cli,
        '--scene', resolve(task.scene),
        '--start', String(task.start),
        '--end', String(task.end),
        '--output-dir', resolve(task.outputDir),
        // normalized so the CLI and expectedOutputs agree on a pattern without `#`
        '--pattern', normalizePattern(task.outputPattern)
      ]
      if (task.width !== undefined) args.push('--width', String(task.width))
      if (task.height !== undefined) args.push('--height', String(task.height))
      return { file: process.execPath, args, cwd: resolve(task.inputDir) }
    },
    parseProgress (line: string, task: RenderTask): number | undefined {
      const m = PROGRESS_RE.exec(line)
      if (m === null) return undefined
      const index = Number(m[1]) - task.start
      const count = task.end - task.start + 1
      if (index < 0 || index >= count) return undefined
      return Math.min(1, (index + Math.min(1, Number(m[2]))) / count)
    },
    expectedOutputs: task => outputPaths(resolve(task.outputDir), normalizePattern(task.outputPattern), task.start, task.end),
    errorLine: lines => [...lines].reverse().find(l => l.startsWith('error: '))?.slice('error: '.length)
  }
}
