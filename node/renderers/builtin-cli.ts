#!/usr/bin/env node
/**
 * The built-in renderer as an executable. The farm runs it as a child
 * process (never in-process) so CPU and memory are measured per task and a
 * frame can be killed.
 *
 *   builtin-cli --scene FILE --start N --end M --output-dir DIR
 *               [--pattern frame_####.png] [--width W] [--height H]
 *
 * stdout: `PROGRESS <frame> <fraction>` and `SAVED <path>` lines.
 * Errors: one `error: <message>` line on stderr, exit 1 (2 for bad usage).
 */
import { mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { basename, join, resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { parseBuiltinScene, SCENE_LIMITS } from './builtin-scene.js'
import { BUILTIN_RENDERER_VERSION, renderFrame } from './builtin-raytracer.js'
import { encodePng } from './png.js'

const DEFAULT_PATTERN = 'frame_####.png'

const USAGE = 'usage: builtin-cli --scene FILE --start N --end M --output-dir DIR [--pattern frame_####.png] [--width W] [--height H]'

class UsageError extends Error {
  override name = 'UsageError'
}

class CliError extends Error {
  override name = 'CliError'
}

/**
 * Replaces every run of `#` with the frame number zero-padded to the run's
 * length (`frame_####.png`, 7 -> `frame_0007.png`); longer numbers are kept whole.
 */
function frameFileName (pattern: string, frame: number): string {
  return pattern.replace(/#+/g, run => {
    const digits = String(Math.abs(frame)).padStart(run.length, '0')
    return frame < 0 ? `-${digits}` : digits
  })
}

function integerArg (value: string | undefined, name: string, min: number, max: number): number | undefined {
  if (value === undefined) return undefined
  const n = Number(value)
  if (!/^-?\d+$/.test(value) || !Number.isSafeInteger(n) || n < min || n > max) {
    throw new UsageError(`--${name} must be an integer from ${min} to ${max}, got "${value}"`)
  }
  return n
}

interface Options {
  scene: string
  start: number
  end: number
  outputDir: string
  pattern: string
  width?: number
  height?: number
}

function parseOptions (argv: string[]): Options | 'help' | 'version' {
  let values
  try {
    values = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        scene: { type: 'string' },
        start: { type: 'string' },
        end: { type: 'string' },
        'output-dir': { type: 'string' },
        pattern: { type: 'string' },
        width: { type: 'string' },
        height: { type: 'string' },
        help: { type: 'boolean' },
        version: { type: 'boolean' }
      }
    }).values
  } catch (err) {
    throw new UsageError((err as Error).message)
  }
  if (values.help === true) return 'help'
  if (values.version === true) return 'version'
  for (const required of ['scene', 'start', 'end', 'output-dir'] as const) {
    if (values[required] === undefined) throw new UsageError(`--${required} is required`)
  }
  const frameLimit = 1e9
  const start = integerArg(values.start, 'start', -frameLimit, frameLimit) as number
  const end = integerArg(values.end, 'end', -frameLimit, frameLimit) as number
  if (end < start) throw new UsageError(`--end (${end}) must not be before --start (${start})`)
  const pattern = values.pattern ?? DEFAULT_PATTERN
  // The pattern names a file inside the output dir; a path in it could write anywhere.
  if (pattern === '' || pattern !== basename(pattern) || pattern.includes('\\') || pattern === '.' || pattern === '..') {
    throw new UsageError(`--pattern must be a plain file name, got "${pattern}"`)
  }
  if (!pattern.includes('#') && end !== start) {
    throw new UsageError('--pattern must contain # (the frame number) when rendering more than one frame')
  }
  return {
    scene: values.scene as string,
    start,
    end,
    outputDir: resolve(values['output-dir'] as string),
    pattern,
    width: integerArg(values.width, 'width', 1, SCENE_LIMITS.maxDimension),
    height: integerArg(values.height, 'height', 1, SCENE_LIMITS.maxDimension)
  }
}

function readScene (file: string): unknown {
  let text: string
  try {
    text = readFileSync(file, 'utf8')
  } catch (err) {
    throw new CliError(`cannot read scene ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`)
  }
  try {
    return JSON.parse(text)
  } catch (err) {
    throw new CliError(`scene ${file} is not valid JSON: ${(err as Error).message}`)
  }
}

/** Fractions as short decimals (`0.3`, `1`) so progress lines stay easy to parse. */
function formatFraction (f: number): string {
  return String(Math.round(f * 1000) / 1000)
}

function run (argv: string[]): void {
  const options = parseOptions(argv)
  if (options === 'help') {
    process.stdout.write(USAGE + '\n')
    return
  }
  if (options === 'version') {
    process.stdout.write(`farmesh-builtin ${BUILTIN_RENDERER_VERSION}\n`)
    return
  }
  const scene = parseBuiltinScene(readScene(options.scene))
  mkdirSync(options.outputDir, { recursive: true })
  for (let frame = options.start; frame <= options.end; frame++) {
    process.stdout.write(`PROGRESS ${frame} 0\n`)
    const image = renderFrame(scene, frame, {
      width: options.width,
      height: options.height,
      onProgress: fraction => process.stdout.write(`PROGRESS ${frame} ${formatFraction(fraction)}\n`)
    })
    const target = join(options.outputDir, frameFileName(options.pattern, frame))
    // Write then rename (atomic within a directory): a watcher never sees a half-written frame.
    const temp = join(options.outputDir, `.${basename(target)}.${process.pid}.tmp`)
    try {
      writeFileSync(temp, encodePng(image))
      renameSync(temp, target)
    } catch (err) {
      rmSync(temp, { force: true })
      throw new CliError(`cannot write ${target}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`)
    }
    process.stdout.write(`SAVED ${target}\n`)
  }
}

try {
  run(process.argv.slice(2))
} catch (err) {
  // Expected failures (bad scene, bad arguments, I/O) become one line, no stack trace.
  const message = err instanceof Error ? err.message : String(err)
  process.stderr.write(`error: ${message.replace(/\s*\n\s*/g, ' ')}\n`)
  process.exitCode = err instanceof UsageError ? 2 : 1
}
