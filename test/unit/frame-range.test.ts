import { describe, it, expect } from 'vitest'
import { parseFrameRange, formatFrameRange, chunkFrames, FrameRangeError, MAX_FRAMES } from '../../node/jobs/frame-range.js'

describe('parseFrameRange', () => {
  it('parses a single frame', () => {
    expect(parseFrameRange('7')).toEqual([7])
    expect(parseFrameRange('0')).toEqual([0])
  })

  it('parses a contiguous range', () => {
    const f = parseFrameRange('1-240')
    expect(f).toHaveLength(240)
    expect(f[0]).toBe(1)
    expect(f[239]).toBe(240)
  })

  it('parses a stepped range', () => {
    expect(parseFrameRange('1-10:2')).toEqual([1, 3, 5, 7, 9])
    expect(parseFrameRange('1-240:2')).toHaveLength(120)
    expect(parseFrameRange('5-5:3')).toEqual([5])
  })

  it('parses lists, sorting and removing duplicates', () => {
    expect(parseFrameRange('1,5,9-12')).toEqual([1, 5, 9, 10, 11, 12])
    expect(parseFrameRange('9-12, 1 ,5,10')).toEqual([1, 5, 9, 10, 11, 12])
  })

  it.each([
    ['', /empty/],
    ['  ', /empty/],
    ['1,,2', /empty part/],
    ['-5', /"-5": negative/],
    ['1--5', /"1--5"/],
    ['10-1', /"10-1": end 1 is before start 10/],
    ['1-10:0', /"1-10:0": step/],
    ['a-b', /"a-b"/],
    ['1.5', /"1.5"/],
    ['1-10:2:3', /"1-10:2:3"/],
    ['3,x', /"x"/],
    ['99999999999999999999', /too large/]
  ])('rejects %j naming the bad part', (s, msg) => {
    let err: unknown
    try { parseFrameRange(s) } catch (e) { err = e }
    expect(err).toBeInstanceOf(FrameRangeError)
    expect((err as Error).name).toBe('FrameRangeError')
    expect((err as Error).message).toMatch(msg)
  })

  it('refuses more than a million frames without expanding them', () => {
    expect(parseFrameRange(`1-${MAX_FRAMES}`)).toHaveLength(MAX_FRAMES)
    expect(() => parseFrameRange(`0-${MAX_FRAMES}`)).toThrow(/more than 1000000 frames/)
    expect(() => parseFrameRange('1-1000000000000')).toThrow(FrameRangeError)
    expect(() => parseFrameRange(`1-${MAX_FRAMES},${MAX_FRAMES + 5}`)).toThrow(/"1000005"/)
  })
})

describe('formatFrameRange', () => {
  it.each([
    [[], ''],
    [[7], '7'],
    [[1, 2], '1-2'],
    [[1, 2, 3, 4], '1-4'],
    [[1, 3, 5, 7], '1-7:2'],
    [[1, 5], '1,5'],
    [[1, 5, 9, 10, 11, 12], '1,5,9-12'],
    [[1, 3, 5, 6, 7], '1,3,5-7'],
    [[5, 1, 3, 3, 7], '1-7:2'],
    [[1, 2, 3, 5, 7, 9, 20], '1-3,5-9:2,20']
  ])('formats %j as %j', (frames, s) => {
    expect(formatFrameRange(frames)).toBe(s)
  })

  it('is the inverse of parseFrameRange', () => {
    for (const s of ['1-240', '1-240:2', '1,5,9-12', '7', '0-100:7,3,200-210', '1,2,4,8,16,32,33,34']) {
      const frames = parseFrameRange(s)
      expect(parseFrameRange(formatFrameRange(frames))).toEqual(frames)
    }
  })
})

describe('chunkFrames', () => {
  it('defaults to one frame per chunk', () => {
    expect(chunkFrames([1, 2, 3], 1)).toEqual([
      { start: 1, end: 1, step: 1, frames: [1] },
      { start: 2, end: 2, step: 1, frames: [2] },
      { start: 3, end: 3, step: 1, frames: [3] }
    ])
  })

  it('groups contiguous frames up to the chunk size', () => {
    const chunks = chunkFrames(parseFrameRange('1-10'), 4)
    expect(chunks.map(c => [c.start, c.end])).toEqual([[1, 4], [5, 8], [9, 10]])
    expect(chunks[2].frames).toEqual([9, 10])
  })

  it('groups stepped runs by their step', () => {
    const chunks = chunkFrames(parseFrameRange('1-20:2'), 3)
    expect(chunks[0]).toEqual({ start: 1, end: 5, step: 2, frames: [1, 3, 5] })
    expect(chunks).toHaveLength(4)
    expect(chunks[3]).toEqual({ start: 19, end: 19, step: 1, frames: [19] })
  })

  it('never lets a chunk span a change of gap', () => {
    const chunks = chunkFrames(parseFrameRange('1,2,3,10,11,12'), 10)
    expect(chunks.map(c => c.frames)).toEqual([[1, 2, 3], [10, 11, 12]])
    for (const c of chunkFrames(parseFrameRange('1,5,9-12,20,30-40:5'), 4)) {
      const expected: number[] = []
      for (let f = c.start; f <= c.end; f += c.step) expected.push(f)
      expect(c.frames).toEqual(expected)
      expect(c.frames.length).toBeLessThanOrEqual(4)
    }
  })

  it('covers every frame exactly once', () => {
    const frames = parseFrameRange('1-100:3,2,50-60')
    const chunks = chunkFrames(frames, 7)
    expect(chunks.flatMap(c => c.frames)).toEqual(frames)
  })

  it('rejects a bad chunk size and handles no frames', () => {
    expect(() => chunkFrames([1], 0)).toThrow(RangeError)
    expect(() => chunkFrames([1], 1.5)).toThrow(RangeError)
    expect(chunkFrames([], 5)).toEqual([])
  })
})
