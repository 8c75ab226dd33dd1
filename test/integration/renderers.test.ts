import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import { execFileSync } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { PNG } from 'pngjs'
import type { RenderTask } from '../../node/renderers/adapter.js'
import { blenderAdapter } from '../../node/renderers/blender.js'
import { commandAdapter } from '../../node/renderers/command.js'
import { povrayAdapter, scratchDir } from '../../node/renderers/povray.js'
import { adapterFor, UnknownRendererError } from '../../node/renderers/registry.js'
import { runTask } from '../../node/renderers/run-task.js'
import { onPath } from '../harness/on-path.js'


let root: string
beforeAll(() => { root = mkdtempSync(join(tmpdir(), 'farmesh-renderers-')) })
afterAll(() => { rmSync(root, { recursive: true, force: true }) })

/** A fresh input dir holding `files`, and an empty output dir. */
function jobDirs (name: string, files: Record<string, string> = {}): { inputDir: string, outputDir: string } {
  const inputDir = join(root, name, 'in')
  const outputDir = join(root, name, 'out')
  mkdirSync(inputDir, { recursive: true })
  mkdirSync(outputDir, { recursive: true })
  for (const [file, text] of Object.entries(files)) writeFileSync(join(inputDir, file), text)
  return { inputDir, outputDir }
}

// PNGs carry a render timestamp, so frames are compared by their pixels.
function pixels (file: string): Buffer {
  return PNG.sync.read(readFileSync(file)).data
}

function size (file: string): [number, number] {
  const png = PNG.sync.read(readFileSync(file))
  return [png.width, png.height]
}

function alive (pid: number): boolean {
  try {
    // a zombie waiting for a reaper that never comes is dead for our purposes
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'))
  } catch {
    return false
  }
}

const ANIMATED_POV = `#version 3.7;
global_settings { assumed_gamma 1.0 }
camera { location <0, 1, -4> look_at <0, 0, 0> aperture 0.3 blur_samples 40 focal_point <0, 0, 0> }
light_source { <2, 4, -3> color rgb 1 }
sphere { <clock * 2 - 1, 0, 0>, 0.7 pigment { color rgb <1, 0.3, 0.2> } finish { reflection 0.3 } }
plane { y, -1 pigment { checker color rgb 1 color rgb 0.2 } }
`

describe.skipIf(!onPath('povray'))('POV-Ray adapter', () => {
  it('renders an animation chunk into pattern-named, distinct frames', async () => {
    const dirs = jobDirs('pov-anim', { 'scene.pov': ANIMATED_POV })
    const task: RenderTask = {
      ...dirs, scene: join(dirs.inputDir, 'scene.pov'), start: 1, end: 3, clockStart: 1, clockEnd: 3, width: 64, height: 48
    }
    const progress: number[] = []
    const t0 = Date.now()
    const result = await runTask(povrayAdapter, task, { onProgress: f => progress.push(f) })
    console.log(`povray 3 frames 64x48: ${Date.now() - t0} ms wall, ${result.cpuSeconds} s cpu, peak rss ${result.peakRssBytes} B`)

    expect(result.error).toBeUndefined()
    expect(result.ok).toBe(true)
    expect(result.exitCode).toBe(0)
    const names = ['frame_0001.png', 'frame_0002.png', 'frame_0003.png']
    expect(result.outputs).toEqual(names.map(n => join(dirs.outputDir, n)))
    expect(result.missing).toEqual([])
    expect(existsSync(scratchDir(task))).toBe(false)
    const images = result.outputs.map(pixels)
    expect(size(result.outputs[0])).toEqual([64, 48])
    expect(images[0].equals(images[1])).toBe(false)
    expect(images[1].equals(images[2])).toBe(false)
    expect(images[0].equals(images[2])).toBe(false)

    expect(progress.length).toBeGreaterThan(3)
    expect(progress.every((p, i) => i === 0 || p > progress[i - 1])).toBe(true)
    expect(progress.at(-1)).toBe(1)
    expect(result.cpuSeconds).toBeGreaterThan(0)
    expect(result.peakRssBytes).toBeGreaterThan(0)
    expect(result.wallSeconds).toBeGreaterThan(0)

    // A chunk of the same job gets each frame's own clock: same pixels as in the whole run.
    const chunk = await runTask(povrayAdapter, { ...task, outputDir: join(root, 'pov-anim', 'chunk'), start: 2, end: 2 })
    expect(chunk.ok).toBe(true)
    expect(pixels(chunk.outputs[0]).equals(images[1])).toBe(true)

    // A one-frame job has clock 0, as a still render (POV-Ray would make it NaN).
    const still = await runTask(povrayAdapter, {
      ...task, outputDir: join(root, 'pov-anim', 'still'), start: 5, end: 5, clockStart: 5, clockEnd: 5, outputPattern: 'still.png'
    })
    expect(still.outputs).toEqual([join(root, 'pov-anim', 'still', 'still_0005.png')])
    expect(pixels(still.outputs[0]).equals(images[0])).toBe(true)
  })

  it('handles paths with spaces', async () => {
    const dirs = jobDirs('pov with space', { 'my scene.pov': ANIMATED_POV })
    const result = await runTask(povrayAdapter, { ...dirs, scene: join(dirs.inputDir, 'my scene.pov'), start: 1, end: 1, width: 32, height: 24 })
    expect(result.error).toBeUndefined()
    expect(result.outputs).toEqual([join(dirs.outputDir, 'frame_0001.png')])
  })

  it('reports POV-Ray\'s own error line for a broken scene', async () => {
    const dirs = jobDirs('pov-broken', {
      'bad.pov': 'camera { location <0, 1, -4> look_at 0 }\nsphere { <0, 0, 0>, 1 pigment { colr rgb 1 } }\n'
    })
    const result = await runTask(povrayAdapter, { ...dirs, scene: join(dirs.inputDir, 'bad.pov'), start: 1, end: 1, width: 64, height: 48 })
    expect(result.ok).toBe(false)
    expect(result.exitCode).not.toBe(0)
    expect(result.error).toMatch(/Parse Error: .*undeclared identifier 'colr'/)
    expect(result.missing).toEqual([join(dirs.outputDir, 'frame_0001.png')])
    expect(result.logTail.length).toBeGreaterThan(0)
  })
})

// Denoising off: Debian's Blender is built without OpenImageDenoiser.
const MAKE_BLEND = `
import bpy, sys
bpy.ops.wm.read_factory_settings(use_empty=True)
scene = bpy.context.scene
scene.render.engine = 'CYCLES'
scene.cycles.device = 'CPU'
scene.cycles.samples = 8
scene.cycles.use_denoising = False
scene.render.resolution_x = 64
scene.render.resolution_y = 48
scene.render.resolution_percentage = 100
scene.frame_start = 1
scene.frame_end = 2
bpy.ops.mesh.primitive_cube_add(location=(0, 0, 0))
cube = bpy.context.active_object
cube.rotation_euler = (0, 0, 0)
cube.keyframe_insert(data_path='rotation_euler', frame=1)
cube.rotation_euler = (0, 0, 1.0)
cube.keyframe_insert(data_path='rotation_euler', frame=2)
bpy.ops.object.camera_add(location=(4, -4, 3), rotation=(1.1, 0, 0.785))
scene.camera = bpy.context.active_object
bpy.ops.object.light_add(type='SUN', location=(2, -2, 5))
bpy.context.active_object.data.energy = 3
bpy.ops.wm.save_as_mainfile(filepath=sys.argv[-1])
`

describe.skipIf(!onPath('blender'))('Blender adapter', () => {
  let blend: string
  beforeAll(() => {
    const dirs = jobDirs('blend-src')
    blend = join(dirs.inputDir, 'cube.blend')
    execFileSync('blender', ['-b', '--factory-startup', '--python-expr', MAKE_BLEND, '--', blend], { stdio: 'ignore', timeout: 60_000 })
  }, 60_000)

  it('renders frames 1..2 of a tiny Cycles scene', async () => {
    const dirs = jobDirs('blend-render')
    const progress: number[] = []
    const t0 = Date.now()
    const result = await runTask(blenderAdapter, { ...dirs, scene: blend, start: 1, end: 2 }, { onProgress: f => progress.push(f) })
    console.log(`blender 2 frames 64x48 8 spp: ${Date.now() - t0} ms wall, ${result.cpuSeconds} s cpu, peak rss ${result.peakRssBytes} B`)
    expect(result.error).toBeUndefined()
    expect(result.ok).toBe(true)
    expect(result.outputs).toEqual([join(dirs.outputDir, 'frame_0001.png'), join(dirs.outputDir, 'frame_0002.png')])
    expect(size(result.outputs[0])).toEqual([64, 48])
    expect(pixels(result.outputs[0]).equals(pixels(result.outputs[1]))).toBe(false)
    expect(progress.length).toBeGreaterThan(2)
    expect(progress.some(p => p > 0 && p < 1)).toBe(true)
    expect(progress.at(-1)).toBe(1)
    expect(result.cpuSeconds).toBeGreaterThan(0)
    expect(result.peakRssBytes).toBeGreaterThan(0)
  }, 60_000)

  it('overrides the resolution', async () => {
    const dirs = jobDirs('blend-size')
    const result = await runTask(blenderAdapter, { ...dirs, scene: blend, start: 2, end: 2, width: 40, height: 30, outputPattern: 'b_##.png' })
    expect(result.error).toBeUndefined()
    expect(result.outputs).toEqual([join(dirs.outputDir, 'b_02.png')])
    expect(size(result.outputs[0])).toEqual([40, 30])
  }, 60_000)

  it('runs no script embedded in the file unless allowed', async () => {
    const dirs = jobDirs('blend-autoexec')
    const marker = join(dirs.outputDir, 'autoexec-ran')
    const evil = join(dirs.inputDir, 'evil.blend')
    const addScript = `import bpy
t = bpy.data.texts.new('auto.py')
t.write('open(${JSON.stringify(marker)}, "w").write("x")')
t.use_module = True
bpy.ops.wm.save_as_mainfile(filepath=${JSON.stringify(evil)})`
    execFileSync('blender', ['-b', blend, '--python-expr', addScript], { stdio: 'ignore', timeout: 60_000 })
    const task = { ...dirs, scene: evil, start: 1, end: 1, width: 16, height: 12 }
    expect((await runTask(blenderAdapter, task)).ok).toBe(true)
    expect(existsSync(marker)).toBe(false)
    expect((await runTask(blenderAdapter, { ...task, allowScripts: true })).ok).toBe(true)
    expect(existsSync(marker)).toBe(true)
  }, 60_000)

  it('reports Blender\'s error for an unreadable file', async () => {
    const dirs = jobDirs('blend-bad', { 'bad.blend': 'not a blend file' })
    const result = await runTask(blenderAdapter, { ...dirs, scene: join(dirs.inputDir, 'bad.blend'), start: 1, end: 1 })
    expect(result.ok).toBe(false)
    expect(result.exitCode).toBe(1)
    expect(result.error).toMatch(/^Error: File format is not supported/)
  }, 60_000)
})

describe('progress parsing (lines captured from the real renderers)', () => {
  const task: RenderTask = { scene: '/s', inputDir: '/in', outputDir: '/out', start: 1, end: 2 }

  it('POV-Ray: frame headers, then pixel counts of that frame', () => {
    const parse = povrayAdapter.createProgressParser!(task)
    expect(parse('Rendering frame 1 of 2')).toBe(0)
    expect(parse('Rendered 1024 of 3072 pixels (33%)')).toBeCloseTo(1 / 6)
    expect(parse('Rendered 3072 of 3072 pixels (100%)')).toBe(0.5)
    expect(parse('Rendering frame 2 of 2')).toBe(0.5)
    expect(parse('Rendered 1536 of 3072 pixels (50%)')).toBe(0.75)
    expect(parse('Parse Time:       0 hours  0 minutes  0 seconds (0.001 seconds)')).toBeUndefined()
  })

  it('Blender: Cycles samples, tiles, Eevee samples and Saved lines', () => {
    const p = (line: string): number | undefined => blenderAdapter.parseProgress(line, task)
    const fra = (n: number, rest: string): string => `Fra:${n} Mem:9.50M (Peak 10.20M) | Time:00:00.02 | Remaining:00:00.01 | Mem:0.86M, Peak:0.86M | Scene, ViewLayer | ${rest}`
    expect(p(fra(1, 'Synchronizing object | Cube'))).toBe(0)
    expect(p(fra(1, 'Sample 4/8'))).toBe(0.25)
    expect(p(fra(1, 'Path Tracing Sample 8/8'))).toBe(0.5)
    expect(p(fra(2, 'Rendered 1/4 Tiles, Sample 4/8'))).toBeCloseTo(0.5 + 1.5 / 8)
    expect(p(fra(2, 'Rendered 1/4 Tiles, Sample 8/8'))).toBeCloseTo(0.5 + 1 / 8)
    expect(p('Fra:2 Mem:10.24M (Peak 11.34M) | Time:00:03.05 | Rendering 2 / 4 samples')).toBe(0.75)
    expect(p(fra(2, 'Finished'))).toBe(1)
    expect(p("Saved: '/out/frame_0001.png'")).toBe(0.5)
    expect(p(fra(7, 'Sample 1/8'))).toBeUndefined()
    expect(p('Blender quit')).toBeUndefined()
  })

  it('command: PROGRESS fractions and percentages', () => {
    expect(commandAdapter.parseProgress('PROGRESS 0.25', task)).toBe(0.25)
    expect(commandAdapter.parseProgress('tile 3: 40% done', task)).toBe(0.4)
    expect(commandAdapter.parseProgress('loading', task)).toBeUndefined()
  })
})

describe('command adapter', () => {
  it('substitutes placeholders without a shell', async () => {
    const dirs = jobDirs('cmd', { 'scene.txt': 'hello' })
    const script = "const fs = require('fs'); console.log('PROGRESS 0.5'); fs.writeFileSync(process.argv[1], process.argv.slice(2).join('|'))"
    const progress: number[] = []
    const result = await runTask(commandAdapter, {
      ...dirs,
      scene: join(dirs.inputDir, 'scene.txt'),
      start: 4,
      end: 4,
      command: [process.execPath, '-e', script, '{output}', 'a;echo hi $(id) {frame}-{start}-{end}', '{scene}', '{outdir}', '{unknown}']
    }, { onProgress: f => progress.push(f) })
    expect(result.error).toBeUndefined()
    expect(result.ok).toBe(true)
    const out = join(dirs.outputDir, 'frame_0004.png')
    expect(result.outputs).toEqual([out])
    expect(readFileSync(out, 'utf8')).toBe(`a;echo hi $(id) 4-4-4|${join(dirs.inputDir, 'scene.txt')}|${dirs.outputDir}|{unknown}`)
    expect(progress).toEqual([0.5, 1])
  })

  it('fails when the command exits 0 without writing its frame, even if an old one was there', async () => {
    const dirs = jobDirs('cmd-lazy')
    writeFileSync(join(dirs.outputDir, 'frame_0001.png'), 'stale')
    const result = await runTask(commandAdapter, { ...dirs, scene: 'x', start: 1, end: 1, command: [process.execPath, '-e', ''] })
    expect(result.ok).toBe(false)
    expect(result.exitCode).toBe(0)
    expect(result.missing).toEqual([join(dirs.outputDir, 'frame_0001.png')])
    expect(result.error).toMatch(/did not write frame_0001\.png/)
  })

  it('reports the last stderr line of a failing command', async () => {
    const dirs = jobDirs('cmd-fail')
    const result = await runTask(commandAdapter, {
      ...dirs, scene: 'x', start: 1, end: 1, command: [process.execPath, '-e', "console.error('out of cheese'); process.exit(3)"]
    })
    expect(result.exitCode).toBe(3)
    expect(result.error).toBe('out of cheese')
  })

  it('reports a program that does not exist', async () => {
    const dirs = jobDirs('cmd-enoent')
    const result = await runTask(commandAdapter, { ...dirs, scene: 'x', start: 1, end: 1, command: ['/nonexistent/renderer'] })
    expect(result.ok).toBe(false)
    expect(result.error).toMatch(/cannot start \/nonexistent\/renderer: ENOENT/)
  })

  it('measures even a short process', async () => {
    const dirs = jobDirs('cmd-short')
    const busy = "let x = 0; for (let i = 0; i < 2e8; i++) x += i; require('fs').writeFileSync(process.argv[1], String(x))"
    const result = await runTask(commandAdapter, { ...dirs, scene: 'x', start: 1, end: 1, command: [process.execPath, '-e', busy, '{output}'] })
    expect(result.ok).toBe(true)
    expect(result.cpuSeconds).toBeGreaterThan(0.05)
    expect(result.cpuSeconds).toBeLessThan(result.wallSeconds * 4)
    expect(result.peakRssBytes).toBeGreaterThan(1024 * 1024)
    expect(result.ioWriteChars).toBeGreaterThan(0)
  })

  it('kills the whole process group on timeout, SIGKILL for those ignoring SIGTERM', async () => {
    const dirs = jobDirs('cmd-timeout')
    const pidFile = join(dirs.outputDir, 'pids')
    const script = `
      const { spawn } = require('child_process')
      process.on('SIGTERM', () => {}) // stubborn: needs the SIGKILL
      const child = spawn('sleep', ['30'], { stdio: 'inherit' })
      require('fs').writeFileSync(${JSON.stringify(pidFile)}, process.pid + ' ' + child.pid)
      setInterval(() => {}, 1000)`
    const t0 = Date.now()
    const result = await runTask(commandAdapter, { ...dirs, scene: 'x', start: 1, end: 1, command: [process.execPath, '-e', script] }, { timeoutMs: 1500, killGraceMs: 500 })
    const elapsed = Date.now() - t0
    expect(result.timedOut).toBe(true)
    expect(result.killed).toBe(true)
    expect(result.ok).toBe(false)
    expect(result.signal).toBe('SIGKILL')
    expect(result.error).toMatch(/timed out after 1500 ms/)
    expect(elapsed).toBeLessThan(6000)
    const pids = readFileSync(pidFile, 'utf8').split(' ').map(Number)
    expect(pids).toHaveLength(2)
    await new Promise(resolve => setTimeout(resolve, 200))
    for (const pid of pids) expect(alive(pid)).toBe(false)
  }, 15_000)

  it('honours an AbortSignal', async () => {
    const dirs = jobDirs('cmd-abort')
    const ac = new AbortController()
    setTimeout(() => ac.abort(), 300)
    const result = await runTask(commandAdapter, { ...dirs, scene: 'x', start: 1, end: 1, command: ['sleep', '30'] }, { signal: ac.signal })
    expect(result.killed).toBe(true)
    expect(result.timedOut).toBe(false)
    expect(result.signal).toBe('SIGTERM')
    expect(result.error).toBe('aborted')
    expect(result.wallSeconds).toBeLessThan(5)

    const before = await runTask(commandAdapter, { ...dirs, scene: 'x', start: 1, end: 1, command: ['sleep', '30'] }, { signal: AbortSignal.abort() })
    expect(before.killed).toBe(true)
    expect(before.exitCode).toBeNull()
  })

  it('lets a wrapper rewrite the command', async () => {
    const dirs = jobDirs('cmd-wrap')
    const result = await runTask(commandAdapter, { ...dirs, scene: 'x', start: 1, end: 1, command: ['false'] }, {
      wrap: cmd => ({ ...cmd, file: process.execPath, args: ['-e', "require('fs').writeFileSync(process.argv[1], 'wrapped')", join(dirs.outputDir, 'frame_0001.png')] })
    })
    expect(result.ok).toBe(true)
    expect(result.command.file).toBe(process.execPath)
  })
})

describe('builtin adapter', () => {
  it('passes the CLI interface and parses its PROGRESS lines', async () => {
    const dirs = jobDirs('builtin')
    // Stands in for builtin-cli with the same interface; records its argv.
    const fakeCli = join(dirs.inputDir, 'fake-cli.mjs')
    writeFileSync(fakeCli, `
      import { writeFileSync } from 'node:fs'
      import { join } from 'node:path'
      const a = process.argv.slice(2)
      const opt = name => a[a.indexOf('--' + name) + 1]
      writeFileSync(join(opt('output-dir'), 'argv.json'), JSON.stringify(a))
      for (let f = Number(opt('start')); f <= Number(opt('end')); f++) {
        console.log('PROGRESS ' + f + ' 0.5')
        const name = opt('pattern').replace(/#+/, r => String(f).padStart(r.length, '0'))
        writeFileSync(join(opt('output-dir'), name), 'png')
        console.log('PROGRESS ' + f + ' 1')
      }`)
    const adapter = adapterFor('builtin', { builtinCli: fakeCli })
    const progress: number[] = []
    const result = await runTask(adapter, {
      ...dirs, scene: join(dirs.inputDir, 'scene.json'), start: 3, end: 4, width: 20, height: 10, outputPattern: 'img.png'
    }, { onProgress: f => progress.push(f) })
    expect(result.error).toBeUndefined()
    expect(result.outputs).toEqual([join(dirs.outputDir, 'img_0003.png'), join(dirs.outputDir, 'img_0004.png')])
    expect(progress).toEqual([0.25, 0.5, 0.75, 1])
    expect(JSON.parse(readFileSync(join(dirs.outputDir, 'argv.json'), 'utf8'))).toEqual([
      '--scene', join(dirs.inputDir, 'scene.json'), '--start', '3', '--end', '4',
      '--output-dir', dirs.outputDir, '--pattern', 'img_####.png', '--width', '20', '--height', '10'
    ])
  })

  it('knows the four renderers and no others', () => {
    for (const name of ['blender', 'povray', 'command', 'builtin']) expect(adapterFor(name, { builtinCli: 'x' }).name).toBe(name)
    expect(() => adapterFor('maya', { builtinCli: 'x' })).toThrow(UnknownRendererError)
  })
})
