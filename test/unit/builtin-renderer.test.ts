import { spawnSync } from 'node:child_process'
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { parseBuiltinScene, SceneError, type BuiltinScene } from '../../node/renderers/builtin-scene.js'
import { cameraAt, renderFrame, sphereCenterAt } from '../../node/renderers/builtin-raytracer.js'
import { decodePng, encodePng, PngError, type RgbaImage } from '../../node/renderers/png.js'
import { contactSheet, contactSheetImage, ContactSheetError, downscale } from '../../node/renderers/contact-sheet.js'
import { encodeAnimatedGif, GifError } from '../../node/renderers/gif.js'
import { demoScene } from '../../node/renderers/demo-scene.js'

const ROOT = join(import.meta.dirname, '..', '..')
const CLI = join(ROOT, 'dist', 'node', 'renderers', 'builtin-cli.js')

let tmp: string
beforeAll(() => { tmp = mkdtempSync(join(tmpdir(), 'farmesh-builtin-')) })
afterAll(() => { rmSync(tmp, { recursive: true, force: true }) })

/** A small valid scene as raw JSON, for tests to break one field at a time. */
function rawScene (): any {
  return {
    version: 1,
    width: 32,
    height: 24,
    background: [0, 0, 1],
    camera: { keyframes: [{ frame: 1, position: [0, 0, 5], lookAt: [0, 0, 0], fov: 40 }] },
    lights: [{ position: [0, 10, 5], color: [1, 1, 1], intensity: 1 }],
    objects: [
      { type: 'plane', point: [0, -1, 0], normal: [0, 2, 0], color: [1, 1, 1], checker: [0, 0, 0] },
      { type: 'sphere', center: [0, 0, 0], radius: 1, color: [1, 0, 0] },
      { type: 'sphere', center: [3, 0, 0], radius: 0.5, color: [0, 1, 0], reflect: 0.5 }
    ]
  }
}

function sceneError (mutate: (s: any) => void): SceneError {
  const s = rawScene()
  mutate(s)
  try {
    parseBuiltinScene(s)
  } catch (err) {
    expect(err).toBeInstanceOf(SceneError)
    return err as SceneError
  }
  throw new Error('expected parseBuiltinScene to throw')
}

function pixel (img: RgbaImage, x: number, y: number): number[] {
  const i = (y * img.width + x) * 4
  return [...img.rgba.subarray(i, i + 4)]
}

function differingPixels (a: RgbaImage, b: RgbaImage): number {
  let n = 0
  for (let i = 0; i < a.rgba.length; i += 4) {
    if (a.rgba[i] !== b.rgba[i] || a.rgba[i + 1] !== b.rgba[i + 1] || a.rgba[i + 2] !== b.rgba[i + 2]) n++
  }
  return n
}

function solid (width: number, height: number, rgb: number[]): RgbaImage {
  const rgba = Buffer.alloc(width * height * 4)
  for (let i = 0; i < rgba.length; i += 4) rgba.set([...rgb, 255], i)
  return { width, height, rgba }
}

describe('parseBuiltinScene', () => {
  it('accepts a valid scene, fills defaults and normalises plane normals', () => {
    const scene = parseBuiltinScene(rawScene())
    expect(scene.width).toBe(32)
    expect(scene.objects).toHaveLength(3)
    const plane = scene.objects[0]
    expect(plane.type === 'plane' && plane.normal).toEqual([0, 1, 0])
    expect(scene.objects[1].reflect).toBe(0)
  })

  it('returns a copy that later changes to the input cannot reach', () => {
    const raw = rawScene()
    const scene = parseBuiltinScene(raw)
    raw.objects[1].center[0] = 99
    raw.camera.keyframes[0].position[2] = 99
    expect(scene.objects[1].type === 'sphere' && scene.objects[1].center[0]).toBe(0)
    expect(scene.camera.keyframes[0].position[2]).toBe(5)
  })

  it('accepts the demo scene after a JSON round trip', () => {
    const scene = parseBuiltinScene(JSON.parse(JSON.stringify(demoScene(12))))
    expect(scene.camera.keyframes).toHaveLength(12)
  })

  it.each([
    ['objects[2].radius: must be a positive number', (s: any) => { s.objects[2].radius = -1 }],
    ['objects[1].radius: must be a positive number', (s: any) => { s.objects[1].radius = '1' }],
    ['objects[1].radus: unknown field', (s: any) => { s.objects[1].radus = 2 }],
    ['objects[0].type: must be "sphere" or "plane"', (s: any) => { s.objects[0].type = 'cube' }],
    ['objects[0].normal: must not be the zero vector', (s: any) => { s.objects[0].normal = [0, 0, 0] }],
    ['objects[0].checker[2]: must be a number from 0 to 1', (s: any) => { s.objects[0].checker = [0, 0, 2] }],
    ['objects[2].reflect: must be a number from 0 to 1', (s: any) => { s.objects[2].reflect = 1.5 }],
    ['objects[1].center: must be an array of 3 numbers', (s: any) => { s.objects[1].center = [0, 0] }],
    ['objects[1].center[1]: must be a finite number', (s: any) => { s.objects[1].center = [0, null, 0] }],
    ['objects[1].keyframes[1].frame: keyframes must be in strictly increasing frame order', (s: any) => {
      s.objects[1].keyframes = [{ frame: 5, center: [0, 0, 0] }, { frame: 5, center: [1, 0, 0] }]
    }],
    ['background[1]: must be a number from 0 to 1', (s: any) => { s.background = [0, -0.1, 0] }],
    ['width: must be an integer from 1 to 4096', (s: any) => { s.width = 5000 }],
    ['height: must be an integer from 1 to 4096', (s: any) => { s.height = 1.5 }],
    ['version: must be 1', (s: any) => { s.version = 2 }],
    ['camera.keyframes: must have 1 to 10000 entries', (s: any) => { s.camera.keyframes = [] }],
    ['camera.keyframes[0].fov: must be between 0 and 180 degrees (exclusive)', (s: any) => { s.camera.keyframes[0].fov = 180 }],
    ['camera.keyframes[0].lookAt: must differ from position', (s: any) => { s.camera.keyframes[0].lookAt = [0, 0, 5] }],
    ['camera.keyframes[1].frame: keyframes must be in strictly increasing frame order', (s: any) => {
      s.camera.keyframes.push({ ...s.camera.keyframes[0], frame: 0 })
    }],
    ['lights[0].intensity: must not be negative', (s: any) => { s.lights[0].intensity = -2 }],
    ['lights: must have at most 16 entries', (s: any) => { s.lights = Array(17).fill(s.lights[0]) }],
    ['objects: must have at most 1000 entries', (s: any) => { s.objects = Array(1001).fill(s.objects[1]) }],
    ['objects: must be an array', (s: any) => { s.objects = {} }]
  ])('reports %s', (message, mutate) => {
    const err = sceneError(mutate)
    expect(err.message).toBe(message)
    expect(err.name).toBe('SceneError')
  })

  it('rejects a non-object scene', () => {
    expect(() => parseBuiltinScene([1, 2])).toThrow(new SceneError('scene: must be an object'))
    expect(() => parseBuiltinScene(null)).toThrow(SceneError)
  })

  it('accepts exactly the limits', () => {
    const s = rawScene()
    s.width = 4096
    s.lights = Array(16).fill(s.lights[0])
    s.objects = Array(1000).fill(s.objects[1])
    expect(() => parseBuiltinScene(s)).not.toThrow()
  })
})

describe('keyframe interpolation', () => {
  const keys = [
    { frame: 10, position: [0, 0, 10] as [number, number, number], lookAt: [0, 0, 0] as [number, number, number], fov: 40 },
    { frame: 20, position: [10, 0, 10] as [number, number, number], lookAt: [0, 10, 0] as [number, number, number], fov: 60 }
  ]

  it('interpolates linearly between keyframes', () => {
    expect(cameraAt(keys, 15)).toEqual({ position: [5, 0, 10], lookAt: [0, 5, 0], fov: 50 })
  })

  it('clamps before the first and after the last keyframe', () => {
    expect(cameraAt(keys, 1).position).toEqual([0, 0, 10])
    expect(cameraAt(keys, 99).fov).toBe(60)
  })

  it('moves animated spheres and leaves static ones at their centre', () => {
    const scene = parseBuiltinScene({
      ...rawScene(),
      objects: [
        { type: 'sphere', center: [9, 9, 9], radius: 1, color: [1, 1, 1], keyframes: [{ frame: 1, center: [0, 0, 0] }, { frame: 5, center: [0, 4, 0] }, { frame: 9, center: [8, 4, 0] }] },
        { type: 'sphere', center: [9, 9, 9], radius: 1, color: [1, 1, 1] }
      ]
    })
    const [moving, still] = scene.objects as any
    expect(sphereCenterAt(moving, 3)).toEqual([0, 2, 0])
    expect(sphereCenterAt(moving, 7)).toEqual([4, 4, 0])
    expect(sphereCenterAt(moving, 100)).toEqual([8, 4, 0])
    expect(sphereCenterAt(still, 3)).toEqual([9, 9, 9])
  })
})

describe('renderFrame', () => {
  const scene: BuiltinScene = parseBuiltinScene(rawScene())

  it('is deterministic: the same input gives the same bytes', () => {
    const demo = parseBuiltinScene(demoScene(24))
    const a = renderFrame(demo, 5)
    const b = renderFrame(parseBuiltinScene(demoScene(24)), 5)
    expect(a.rgba.length).toBe(320 * 180 * 4)
    expect(a.rgba.equals(b.rgba)).toBe(true)
  })

  it('shows the sphere, the background and the plane where they are', () => {
    const img = renderFrame(scene, 1, { width: 64, height: 48 })
    expect([img.width, img.height]).toEqual([64, 48])
    const [r, g, b, a] = pixel(img, 32, 22) // the red sphere, lit from above
    expect(r).toBeGreaterThan(100)
    expect(g).toBeLessThan(30)
    expect(b).toBeLessThan(30)
    expect(a).toBe(255)
    expect(pixel(img, 0, 0)).toEqual([0, 0, 255, 255]) // above the horizon: background
    const floor = pixel(img, 32, 47)
    expect(floor[2]).toBeLessThan(floor[0] + 1) // the floor is grey/black, not background blue
  })

  it('casts shadows', () => {
    // Camera straight above the origin looking down; its image "up" is world -x.
    // A light off to the +x side throws the sphere's shadow to x = -2.2 on the floor.
    const s = parseBuiltinScene({
      version: 1, width: 40, height: 40, background: [0, 0, 0],
      camera: { keyframes: [{ frame: 1, position: [0, 10, 0], lookAt: [0, 0, 0], fov: 60 }] },
      lights: [{ position: [20, 20, 0], color: [1, 1, 1], intensity: 1 }],
      objects: [
        { type: 'plane', point: [0, 0, 0], normal: [0, 1, 0], color: [1, 1, 1] },
        { type: 'sphere', center: [0, 2, 0], radius: 1, color: [1, 1, 1] }
      ]
    })
    const withSphere = renderFrame(s, 1)
    const without = renderFrame({ ...s, objects: [s.objects[0]] }, 1)
    expect(pixel(without, 20, 12)[0]).toBeGreaterThan(150) // lit floor
    expect(pixel(withSphere, 20, 12)[0]).toBeLessThan(30) // same floor point, in shadow: ambient only
    expect(pixel(withSphere, 20, 28)[0]).toBeGreaterThan(150) // the far side of the sphere is not shadowed
  })

  it('reflects other objects in mirrors', () => {
    const base = {
      version: 1, width: 40, height: 40, background: [0, 0, 0],
      camera: { keyframes: [{ frame: 1, position: [0, 0, 5], lookAt: [0, 0, 0], fov: 30 }] },
      lights: [],
      objects: [{ type: 'sphere', center: [0, 0, 0], radius: 1, color: [0, 0, 0], reflect: 1 }]
    }
    const dark = renderFrame(parseBuiltinScene(base), 1)
    // Add a bright wall behind the camera: only the mirror can show it.
    const lit = renderFrame(parseBuiltinScene({
      ...base,
      objects: [...base.objects, { type: 'plane', point: [0, 0, 10], normal: [0, 0, -1], color: [1, 1, 1] }]
    }), 1)
    expect(pixel(dark, 20, 20)).toEqual([0, 0, 0, 255])
    expect(pixel(lit, 20, 20)[0]).toBeGreaterThan(10) // ambient white wall seen in the mirror
  })

  it('reports progress in increasing fractions ending at 1', () => {
    const seen: number[] = []
    renderFrame(scene, 1, { width: 20, height: 50, onProgress: f => seen.push(f) })
    expect(seen.length).toBeGreaterThanOrEqual(9)
    expect(seen.length).toBeLessThanOrEqual(11)
    expect(seen.at(-1)).toBe(1)
    for (let i = 1; i < seen.length; i++) expect(seen[i]).toBeGreaterThan(seen[i - 1])
  })

  it('renders consecutive demo frames that differ visibly', () => {
    const demo = parseBuiltinScene(demoScene(48))
    const frames = [1, 2, 3].map(f => renderFrame(demo, f))
    const pixels = 320 * 180
    expect(differingPixels(frames[0], frames[1])).toBeGreaterThan(pixels * 0.05)
    expect(differingPixels(frames[1], frames[2])).toBeGreaterThan(pixels * 0.05)
  })

  it('renders 320x180 in well under a second', () => {
    const demo = parseBuiltinScene(demoScene(48))
    renderFrame(demo, 1) // warm up the JIT
    const t0 = performance.now()
    renderFrame(demo, 10)
    expect(performance.now() - t0).toBeLessThan(1000)
  })

  it('rejects a bad output size', () => {
    expect(() => renderFrame(scene, 1, { width: 0 })).toThrow(RangeError)
  })
})

describe('png', () => {
  it('round-trips RGBA pixels exactly', () => {
    const rgba = Buffer.alloc(7 * 5 * 4)
    for (let i = 0; i < rgba.length; i++) rgba[i] = (i * 37) & 0xff
    const decoded = decodePng(encodePng({ width: 7, height: 5, rgba }))
    expect([decoded.width, decoded.height]).toEqual([7, 5])
    expect(decoded.rgba.equals(rgba)).toBe(true)
  })

  it('rejects a buffer of the wrong size and garbage input', () => {
    expect(() => encodePng({ width: 2, height: 2, rgba: Buffer.alloc(15) })).toThrow(PngError)
    expect(() => decodePng(Buffer.from('not a png'))).toThrow(PngError)
  })
})

describe('contact sheet', () => {
  it('downscales by averaging boxes', () => {
    const img = { width: 2, height: 1, rgba: Buffer.from([0, 0, 0, 255, 200, 100, 50, 255]) }
    expect([...downscale(img, 1, 1).rgba]).toEqual([100, 50, 25, 255])
  })

  it('lays thumbnails out in a grid, left to right then top to bottom', () => {
    const colours = [[255, 0, 0], [0, 255, 0], [0, 0, 255]]
    const paths = colours.map((c, i) => {
      const p = join(tmp, `sheet_${i}.png`)
      writeFileSync(p, encodePng(solid(40, 20, c)))
      return p
    })
    const sheet = decodePng(contactSheet(paths, { columns: 2, thumbWidth: 10 }))
    // 2 columns x 2 rows of 10x5 thumbnails with 4px gaps
    expect([sheet.width, sheet.height]).toEqual([4 + 2 * 14, 4 + 2 * 9])
    expect(pixel(sheet, 4 + 5, 4 + 2).slice(0, 3)).toEqual([255, 0, 0])
    expect(pixel(sheet, 18 + 5, 4 + 2).slice(0, 3)).toEqual([0, 255, 0])
    expect(pixel(sheet, 4 + 5, 13 + 2).slice(0, 3)).toEqual([0, 0, 255])
    expect(pixel(sheet, 18 + 5, 13 + 2).slice(0, 3)).toEqual([24, 24, 24]) // empty cell
    expect(pixel(sheet, 0, 0).slice(0, 3)).toEqual([24, 24, 24]) // border
  })

  it('refuses an empty list', () => {
    expect(() => contactSheetImage([])).toThrow(ContactSheetError)
  })
})

/** A straightforward GIF reader, independent of the encoder, to check its output. */
function decodeGif (buf: Buffer): { width: number, height: number, delays: number[], frames: number[][][] } {
  expect(buf.subarray(0, 6).toString('ascii')).toBe('GIF89a')
  const width = buf.readUInt16LE(6)
  const height = buf.readUInt16LE(8)
  const flags = buf[10]
  let pos = 13
  let palette = Buffer.alloc(0)
  if (flags & 0x80) {
    const size = 3 * (1 << ((flags & 7) + 1))
    palette = buf.subarray(pos, pos + size)
    pos += size
  }
  const delays: number[] = []
  const frames: number[][][] = []
  const readSubBlocks = (): Buffer => {
    const parts: Buffer[] = []
    while (buf[pos] !== 0) {
      parts.push(buf.subarray(pos + 1, pos + 1 + buf[pos]))
      pos += 1 + buf[pos]
    }
    pos++
    return Buffer.concat(parts)
  }
  for (;;) {
    const tag = buf[pos++]
    if (tag === 0x3b) break
    if (tag === 0x21) {
      const label = buf[pos++]
      const data = readSubBlocks()
      if (label === 0xf9) delays.push(data.readUInt16LE(1))
    } else if (tag === 0x2c) {
      const w = buf.readUInt16LE(pos + 4)
      const h = buf.readUInt16LE(pos + 6)
      pos += 9
      const minSize = buf[pos++]
      const indices = lzwDecode(readSubBlocks(), minSize)
      expect(indices.length).toBe(w * h)
      frames.push(indices.map(i => [palette[i * 3], palette[i * 3 + 1], palette[i * 3 + 2]]))
    } else {
      throw new Error(`unexpected block 0x${tag.toString(16)}`)
    }
  }
  return { width, height, delays, frames }
}

function lzwDecode (data: Buffer, minSize: number): number[] {
  const clear = 1 << minSize
  const eoi = clear + 1
  const fresh = (): number[][] => [...Array.from({ length: clear }, (_, i) => [i]), [], []]
  let dict = fresh()
  let size = minSize + 1
  let prev: number[] | null = null
  const out: number[] = []
  let bitPos = 0
  while (bitPos + size <= data.length * 8) {
    let code = 0
    for (let i = 0; i < size; i++, bitPos++) {
      if (data[bitPos >> 3] & (1 << (bitPos & 7))) code |= 1 << i
    }
    if (code === clear) {
      dict = fresh()
      size = minSize + 1
      prev = null
      continue
    }
    if (code === eoi) break
    let entry: number[]
    if (code < dict.length) entry = dict[code]
    else if (code === dict.length && prev !== null) entry = [...prev, prev[0]]
    else throw new Error(`bad LZW code ${code}`)
    out.push(...entry)
    if (prev !== null && dict.length < 4096) dict.push([...prev, entry[0]])
    if (dict.length === 1 << size && size < 12) size++
    prev = entry
  }
  return out
}

describe('animated gif', () => {
  it('encodes frames that decode back to the same palette colours', () => {
    // Colours on the palette grid (multiples of 51) survive dithering unchanged.
    const noise = Buffer.alloc(120 * 90 * 4)
    let seed = 12345
    for (let i = 0; i < noise.length; i += 4) {
      for (let c = 0; c < 3; c++) {
        seed = (seed * 1103515245 + 12345) >>> 0
        noise[i + c] = ((seed >>> 16) % 6) * 51
      }
      noise[i + 3] = 255
    }
    const frames = [solid(120, 90, [255, 0, 51]), { width: 120, height: 90, rgba: noise }]
    const gif = decodeGif(encodeAnimatedGif(frames, { delayMs: 80 }))
    expect([gif.width, gif.height]).toEqual([120, 90])
    expect(gif.delays).toEqual([8, 8])
    expect(gif.frames).toHaveLength(2)
    expect(gif.frames[0].every(p => p[0] === 255 && p[1] === 0 && p[2] === 51)).toBe(true)
    // random pixels overflow the 4096-entry code table several times
    gif.frames[1].forEach((p, i) => {
      if (p[0] !== noise[i * 4] || p[1] !== noise[i * 4 + 1] || p[2] !== noise[i * 4 + 2]) {
        throw new Error(`pixel ${i}: got ${p}, expected ${[...noise.subarray(i * 4, i * 4 + 3)]}`)
      }
    })
  })

  it('dithers in-between colours to a mix of neighbouring levels', () => {
    const gif = decodeGif(encodeAnimatedGif([solid(8, 8, [127, 127, 127])]))
    const levels = new Set(gif.frames[0].map(p => p[0]))
    expect(levels).toEqual(new Set([102, 153]))
  })

  it('refuses frames of different sizes', () => {
    expect(() => encodeAnimatedGif([solid(2, 2, [0, 0, 0]), solid(3, 2, [0, 0, 0])])).toThrow(GifError)
    expect(() => encodeAnimatedGif([])).toThrow(GifError)
  })
})

describe('builtin-cli (compiled)', () => {
  beforeAll(() => {
    const started = Date.now()
    // Other modules of the project may not compile yet; tsc still emits ours, which is what we check.
    spawnSync('npx', ['tsc', '-p', join(ROOT, 'tsconfig.json')], { cwd: ROOT, encoding: 'utf8' })
    expect(existsSync(CLI)).toBe(true)
    expect(statSync(CLI).mtimeMs).toBeGreaterThanOrEqual(started - 1000)
  }, 120_000)

  function cli (args: string[]): { status: number | null, stdout: string, stderr: string } {
    const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 60_000 })
    return { status: r.status, stdout: r.stdout, stderr: r.stderr }
  }

  it('writes one PNG per frame, named by the pattern, and reports progress', () => {
    const sceneFile = join(tmp, 'demo.json')
    writeFileSync(sceneFile, JSON.stringify(demoScene(12)))
    const out = join(tmp, 'out')
    const r = cli(['--scene', sceneFile, '--start', '6', '--end', '8', '--output-dir', out, '--pattern', 'shot_##.png', '--width', '64', '--height', '36'])
    expect(r.stderr).toBe('')
    expect(r.status).toBe(0)
    expect(readdirSync(out).sort()).toEqual(['shot_06.png', 'shot_07.png', 'shot_08.png']) // no temp files left behind
    const lines = r.stdout.trim().split('\n')
    for (const line of lines) expect(line).toMatch(/^(PROGRESS \d+ (0|1|0\.\d+)|SAVED .+)$/)
    expect(lines.filter(l => l.startsWith('SAVED '))).toEqual(['shot_06.png', 'shot_07.png', 'shot_08.png'].map(f => `SAVED ${join(out, f)}`))
    expect(lines.indexOf('PROGRESS 7 1')).toBeLessThan(lines.indexOf(`SAVED ${join(out, 'shot_07.png')}`))
    expect(lines.indexOf('PROGRESS 7 1')).toBeGreaterThan(lines.indexOf('PROGRESS 7 0.5'))

    // The file holds exactly what renderFrame produces in-process.
    const png = decodePng(readFileSync(join(out, 'shot_07.png')))
    const expected = renderFrame(parseBuiltinScene(demoScene(12)), 7, { width: 64, height: 36 })
    expect([png.width, png.height]).toEqual([64, 36])
    expect(png.rgba.equals(expected.rgba)).toBe(true)
  })

  it('uses frame_####.png and the scene size by default', () => {
    const sceneFile = join(tmp, 'small.json')
    writeFileSync(sceneFile, JSON.stringify(rawScene()))
    const out = join(tmp, 'out-default')
    const r = cli(['--scene', sceneFile, '--start', '7', '--end', '7', '--output-dir', out])
    expect(r.status).toBe(0)
    expect(readdirSync(out)).toEqual(['frame_0007.png'])
    expect(decodePng(readFileSync(join(out, 'frame_0007.png'))).width).toBe(32)
  })

  it('exits 1 with a one-line error naming the field on a bad scene', () => {
    const bad = rawScene()
    bad.objects[2].radius = 0
    const sceneFile = join(tmp, 'bad.json')
    writeFileSync(sceneFile, JSON.stringify(bad))
    const out = join(tmp, 'out-bad')
    const r = cli(['--scene', sceneFile, '--start', '1', '--end', '1', '--output-dir', out])
    expect(r.status).toBe(1)
    expect(r.stderr).toBe('error: objects[2].radius: must be a positive number\n')
    expect(r.stdout).toBe('')
    expect(existsSync(out)).toBe(false)
  })

  it('exits 1 on unreadable or invalid JSON, without a stack trace', () => {
    const sceneFile = join(tmp, 'broken.json')
    writeFileSync(sceneFile, '{"version": 1,')
    for (const file of [sceneFile, join(tmp, 'missing.json')]) {
      const r = cli(['--scene', file, '--start', '1', '--end', '1', '--output-dir', join(tmp, 'never')])
      expect(r.status).toBe(1)
      expect(r.stderr).toMatch(/^error: [^\n]+\n$/)
    }
  })

  it('rejects bad arguments with exit 2', () => {
    const sceneFile = join(tmp, 'args.json')
    writeFileSync(sceneFile, JSON.stringify(rawScene()))
    const base = ['--scene', sceneFile, '--output-dir', join(tmp, 'out-args')]
    for (const args of [
      ['--start', '1'],
      ['--start', '2', '--end', '1'],
      ['--start', 'x', '--end', '1'],
      ['--start', '1', '--end', '2', '--pattern', 'still.png'],
      ['--start', '1', '--end', '1', '--pattern', '../escape_#.png'],
      ['--start', '1', '--end', '1', '--width', '0'],
      ['--start', '1', '--end', '1', '--bogus']
    ]) {
      const r = cli([...base, ...args])
      expect(r.status, args.join(' ')).toBe(2)
      expect(r.stderr).toMatch(/^error: [^\n]+\n$/)
    }
    expect(existsSync(join(tmp, 'out-args'))).toBe(false)
  })
})
