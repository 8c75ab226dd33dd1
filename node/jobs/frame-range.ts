/**
 * Frame ranges as users type them: `1-240`, `1-240:2`, `1,5,9-12`, `7`.
 * Parsing is strict (a typo must not silently render the wrong frames) and
 * bounded (a range may not expand into an unbounded array).
 */

export class FrameRangeError extends Error {
  constructor (msg: string) {
    super(msg)
    this.name = 'FrameRangeError'
  }
}

/** Upper bound on the frames one range may expand to, so `1-1e12` can't exhaust memory. */
export const MAX_FRAMES = 1_000_000

const PART = /^(\d+)(?:-(\d+)(?::(\d+))?)?$/

function num (digits: string, part: string, what: string): number {
  const n = Number(digits)
  if (!Number.isSafeInteger(n)) throw new FrameRangeError(`bad frame range part "${part}": ${what} ${digits} is too large`)
  return n
}

/** Parse a frame range into sorted, unique, non-negative frame numbers. */
export function parseFrameRange (s: string): number[] {
  if (typeof s !== 'string' || s.trim() === '') throw new FrameRangeError('bad frame range: empty')
  const parts = s.split(',').map(p => p.trim())
  const ranges: Array<[number, number, number]> = []
  let total = 0
  for (const part of parts) {
    if (part === '') throw new FrameRangeError(`bad frame range "${s}": empty part`)
    const m = PART.exec(part)
    if (m === null) {
      const why = part.startsWith('-') ? 'negative frames are not allowed' : 'expected N, A-B or A-B:STEP'
      throw new FrameRangeError(`bad frame range part "${part}": ${why}`)
    }
    const start = num(m[1], part, 'frame')
    const end = m[2] === undefined ? start : num(m[2], part, 'frame')
    const step = m[3] === undefined ? 1 : num(m[3], part, 'step')
    if (end < start) throw new FrameRangeError(`bad frame range part "${part}": end ${end} is before start ${start}`)
    if (step < 1) throw new FrameRangeError(`bad frame range part "${part}": step must be at least 1`)
    // Count before expanding so a huge range is refused without allocating it.
    total += Math.floor((end - start) / step) + 1
    if (total > MAX_FRAMES) throw new FrameRangeError(`bad frame range part "${part}": more than ${MAX_FRAMES} frames`)
    ranges.push([start, end, step])
  }
  const frames = new Set<number>()
  for (const [start, end, step] of ranges) {
    for (let f = start; f <= end; f += step) frames.add(f)
  }
  return [...frames].sort((a, b) => a - b)
}

/** Length of the run starting at frames[i] whose consecutive gaps all equal `step`. */
function runLength (frames: number[], i: number, step: number): number {
  let n = 1
  while (i + n < frames.length && frames[i + n] - frames[i + n - 1] === step) n++
  return n
}

function sortedUnique (frames: number[]): number[] {
  return [...new Set(frames)].sort((a, b) => a - b)
}

/**
 * The compact inverse of parseFrameRange: `[1,2,3,5,7,9,20]` → `1-3,5-9:2,20`.
 * Contiguous runs win over stepped ones; a stepped run needs three frames to
 * be shorter than listing them. An empty list formats as ''.
 */
export function formatFrameRange (frames: number[]): string {
  const fs = sortedUnique(frames)
  const out: string[] = []
  let i = 0
  while (i < fs.length) {
    const contiguous = runLength(fs, i, 1)
    if (contiguous >= 2) {
      out.push(`${fs[i]}-${fs[i + contiguous - 1]}`)
      i += contiguous
      continue
    }
    if (i + 1 < fs.length) {
      const step = fs[i + 1] - fs[i]
      // Stop a stepped run where a contiguous run begins, so that run stays compact.
      let n = runLength(fs, i, step)
      while (n > 1 && i + n < fs.length && fs[i + n] - fs[i + n - 1] === 1) n--
      if (n >= 3) {
        out.push(`${fs[i]}-${fs[i + n - 1]}:${step}`)
        i += n
        continue
      }
    }
    out.push(String(fs[i]))
    i++
  }
  return out.join(',')
}

export interface FrameChunk {
  /** first and last frame of the chunk */
  start: number
  end: number
  /** gap between the chunk's frames (1 when contiguous, or for a single frame) */
  step: number
  /** the chunk's frames: start, start+step, …, end */
  frames: number[]
}

/**
 * Split frames into tasks of at most `chunk` frames. A chunk only groups a
 * run with one step (so it is always `start-end:step` and a renderer can be
 * told exactly which frames to render); a change of gap starts a new chunk.
 */
export function chunkFrames (frames: number[], chunk: number): FrameChunk[] {
  if (!Number.isSafeInteger(chunk) || chunk < 1) throw new RangeError(`chunk size must be a positive integer, got ${chunk}`)
  const fs = sortedUnique(frames)
  const chunks: FrameChunk[] = []
  let i = 0
  while (i < fs.length) {
    const step = i + 1 < fs.length ? fs[i + 1] - fs[i] : 1
    const n = chunk === 1 ? 1 : Math.min(chunk, runLength(fs, i, step))
    const part = fs.slice(i, i + n)
    chunks.push({ start: part[0], end: part[n - 1], step: n === 1 ? 1 : step, frames: part })
    i += n
  }
  return chunks
}
