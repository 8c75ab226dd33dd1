import { describe, it, expect } from 'vitest'
import { DEFAULT_OUTPUT_PATTERN, hashRuns, normalizePattern, outputName, outputPaths, OutputPatternError } from '../../node/renderers/output-names.js'

describe('outputName', () => {
  it('pads the frame to the # run', () => {
    expect(outputName('frame_####.png', 7)).toBe('frame_0007.png')
    expect(outputName('frame_####.png', 0)).toBe('frame_0000.png')
    expect(outputName('f#.png', 3)).toBe('f3.png')
    expect(outputName('shot.###.exr', 42)).toBe('shot.042.exr')
  })

  it('keeps numbers longer than the run whole', () => {
    expect(outputName('frame_##.png', 12345)).toBe('frame_12345.png')
  })

  it('keeps the sign of negative frames, like Blender', () => {
    expect(outputName('frame_####.png', -7)).toBe('frame_-0007.png')
  })

  it('fills every # run', () => {
    expect(outputName('a_##_b_###.png', 9)).toBe('a_09_b_009.png')
    expect(hashRuns('a_##_b_###.png')).toBe(2)
  })

  it('inserts _#### before the extension when the pattern has no #', () => {
    expect(outputName('beauty.png', 7)).toBe('beauty_0007.png')
    expect(outputName('beauty', 7)).toBe('beauty_0007')
    expect(outputName('my.scene.tiff', 12)).toBe('my.scene_0012.tiff')
    expect(normalizePattern('beauty.png')).toBe('beauty_####.png')
  })

  it('defaults to frame_####.png', () => {
    expect(DEFAULT_OUTPUT_PATTERN).toBe('frame_####.png')
    expect(normalizePattern(undefined)).toBe(DEFAULT_OUTPUT_PATTERN)
    expect(outputPaths('/out', undefined, 1, 3)).toEqual(['/out/frame_0001.png', '/out/frame_0002.png', '/out/frame_0003.png'])
  })

  it.each(['', '.', '..', 'a/b_####.png', '../x_####.png', 'a\\b_####.png'])('rejects %j, a path rather than a file name', pattern => {
    expect(() => outputName(pattern, 1)).toThrow(OutputPatternError)
  })

  it('rejects non-integer frames', () => {
    expect(() => outputName('f_#.png', 1.5)).toThrow(OutputPatternError)
  })
})
