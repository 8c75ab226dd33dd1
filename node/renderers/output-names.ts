/**
 * Output file names from a pattern such as `frame_####.png`. Every renderer
 * adapter names (or renames) its frames through here, so the farm always
 * knows which file holds which frame.
 */
import { extname, join } from 'node:path'

export const DEFAULT_OUTPUT_PATTERN = 'frame_####.png'

export class OutputPatternError extends Error {
  constructor (message: string) { super(message); this.name = 'OutputPatternError' }
}

/**
 * The pattern with a frame-number slot guaranteed: `shot.png` becomes
 * `shot_####.png` (`shot` becomes `shot_####`), so chunks never write every
 * frame to one file. Throws when the pattern is a path rather than a file
 * name: it comes from other peers and must not write outside the output dir.
 */
export function normalizePattern (pattern: string = DEFAULT_OUTPUT_PATTERN): string {
  if (pattern === '' || pattern === '.' || pattern === '..' || /[/\\\u0000]/.test(pattern)) {
    throw new OutputPatternError(`output pattern must be a plain file name, got "${pattern}"`)
  }
  if (pattern.includes('#')) return pattern
  const ext = extname(pattern)
  return `${pattern.slice(0, pattern.length - ext.length)}_####${ext}`
}

/**
 * The file name of `frame`: each run of `#` becomes the frame number
 * zero-padded to the run's length (`frame_####.png`, 7 → `frame_0007.png`);
 * longer numbers are kept whole, negative ones keep their sign (`-0007`,
 * like Blender and printf's `%.4d`). Same rule as builtin-cli.
 */
export function outputName (pattern: string, frame: number): string {
  if (!Number.isSafeInteger(frame)) throw new OutputPatternError(`frame must be an integer, got ${frame}`)
  return normalizePattern(pattern).replace(/#+/g, run => {
    const digits = String(Math.abs(frame)).padStart(run.length, '0')
    return frame < 0 ? `-${digits}` : digits
  })
}

/** Absolute output paths of frames start..end of a task, in order. */
export function outputPaths (outputDir: string, pattern: string | undefined, start: number, end: number): string[] {
  const paths: string[] = []
  for (let frame = start; frame <= end; frame++) paths.push(join(outputDir, outputName(pattern ?? DEFAULT_OUTPUT_PATTERN, frame)))
  return paths
}

/** Number of `#` runs; Blender only fills the last one, so its adapter needs exactly one. */
export function hashRuns (pattern: string): number {
  return pattern.match(/#+/g)?.length ?? 0
}
