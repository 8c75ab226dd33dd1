import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import { mkdtemp, writeFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { validateJobSpec, loadJobSpecFile, JobSpecError, jobRequirements, osUserAndGroup, JOB_DEFAULTS } from '../../node/jobs/job-spec.js'

const who = { user: 'alice', group: 'artists' }
const minimal = { name: 'shot-010', frames: '1-240', renderer: 'povray', scene: '/jobs/scene.pov' }

function fails (input: unknown, field: string, msg?: RegExp): JobSpecError {
  let err: unknown
  try { validateJobSpec(input, who) } catch (e) { err = e }
  expect(err).toBeInstanceOf(JobSpecError)
  const e = err as JobSpecError
  expect(e.name).toBe('JobSpecError')
  expect(e.field).toBe(field)
  expect(e.message.startsWith(`${field}: `)).toBe(true)
  if (msg !== undefined) expect(e.message).toMatch(msg)
  return e
}

describe('validateJobSpec', () => {
  it('fills in defaults', () => {
    expect(validateJobSpec(minimal, who)).toEqual({
      name: 'shot-010',
      frames: '1-240',
      chunk: 1,
      renderer: { name: 'povray' },
      outputPattern: 'frame_####.png',
      priority: 50,
      user: 'alice',
      group: 'artists',
      notify: [],
      scene: '/jobs/scene.pov',
      files: [],
      requirements: [],
      maxAttempts: 3
    })
    expect(JOB_DEFAULTS.priority).toBe(50)
  })

  it('keeps every field of a full spec', () => {
    const full = {
      name: 'shot-020',
      frames: '1,5,9-12',
      chunk: 4,
      renderer: { name: 'blender', version: '3.x' },
      width: 1920,
      height: 1080,
      outputPattern: 'shot20_#####.exr',
      priority: 3,
      user: 'bob',
      group: 'lighting',
      notify: ['mailto:bob@example.com', 'https://hooks.example.com/farm', 'http://127.0.0.1:8080/hook', 'http://localhost/x'],
      scene: 'shot.blend',
      files: ['textures/', 'hdri.exr'],
      requirements: ['ram>=16G', 'blender=3.x', 'license=redshift'],
      frameTimeoutSec: 600,
      maxAttempts: 5,
      allowScripts: false
    }
    expect(validateJobSpec(full, who)).toEqual(full)
  })

  it('takes the renderer as a string, with an optional version', () => {
    expect(validateJobSpec({ ...minimal, renderer: 'povray' }, who).renderer).toEqual({ name: 'povray' })
    expect(validateJobSpec({ ...minimal, renderer: 'povray@3.7' }, who).renderer).toEqual({ name: 'povray', version: '3.7' })
    expect(validateJobSpec({ ...minimal, renderer: 'Blender' }, who).renderer).toEqual({ name: 'blender' })
    expect(validateJobSpec({ ...minimal, renderer: 'builtin' }, who).renderer).toEqual({ name: 'builtin' })
  })

  it('requires an argv command for the command renderer, and only there', () => {
    const spec = validateJobSpec({ ...minimal, renderer: 'command', command: ['render', '--frame', '{frame}', '-o', '{output}'] }, who)
    expect(spec.command).toEqual(['render', '--frame', '{frame}', '-o', '{output}'])
    fails({ ...minimal, renderer: 'command' }, 'command', /required/)
    fails({ ...minimal, renderer: 'command', command: 'render {frame}' }, 'command', /list of argv/)
    fails({ ...minimal, renderer: 'command', command: [] }, 'command')
    fails({ ...minimal, renderer: 'command', command: ['render', 3] }, 'command[1]')
    fails({ ...minimal, renderer: 'command', command: [' '] }, 'command[0]')
    fails({ ...minimal, command: ['x'] }, 'command', /only valid with the command renderer/)
  })

  it('records the user and group from defaults, the input, or the OS', () => {
    expect(validateJobSpec({ ...minimal, user: 'carol', group: 'fx' }, who)).toMatchObject({ user: 'carol', group: 'fx' })
    const os = osUserAndGroup()
    expect(os.user).not.toBe('')
    expect(os.group).not.toBe('')
    expect(validateJobSpec(minimal)).toMatchObject(os)
    expect(validateJobSpec(minimal, { user: 'dave' })).toMatchObject({ user: 'dave', group: os.group })
  })

  it('accepts a lone string for list fields and a whole number for frames', () => {
    const spec = validateJobSpec({ ...minimal, files: 'assets', notify: 'mailto:a@b.c', requirements: 'cpus>=4', frames: 7 }, who)
    expect(spec.files).toEqual(['assets'])
    expect(spec.notify).toEqual(['mailto:a@b.c'])
    expect(spec.requirements).toEqual(['cpus>=4'])
    expect(spec.frames).toBe('7')
  })

  it('accepts the whole priority range', () => {
    expect(validateJobSpec({ ...minimal, priority: 0 }, who).priority).toBe(0)
    expect(validateJobSpec({ ...minimal, priority: 1000 }, who).priority).toBe(1000)
  })

  describe('rejects bad input naming the field', () => {
    it('not an object', () => {
      fails(null, 'spec')
      fails([minimal], 'spec')
      fails('spec', 'spec')
    })

    it('unknown fields', () => {
      fails({ ...minimal, colour: 'red' }, 'colour', /unknown field/)
      fails({ ...minimal, renderer: { name: 'povray', flavour: 'x' } }, 'renderer.flavour', /unknown field/)
    })

    it('missing required fields', () => {
      for (const f of ['name', 'frames', 'renderer', 'scene']) {
        const input: Record<string, unknown> = { ...minimal }
        delete input[f]
        fails(input, f, /is required/)
      }
    })

    it('an unknown renderer', () => {
      fails({ ...minimal, renderer: 'maya' }, 'renderer', /unknown renderer "maya" \(expected one of blender, povray, command, builtin\)/)
      fails({ ...minimal, renderer: { name: 'maya' } }, 'renderer', /unknown renderer/)
      fails({ ...minimal, renderer: 5 }, 'renderer')
      fails({ ...minimal, renderer: 'povray@3.7!' }, 'renderer.version', /bad version pattern/)
      fails({ ...minimal, renderer: { name: 'blender', version: 3.1 } }, 'renderer.version', /must be a string/)
    })

    it('a bad frame range', () => {
      fails({ ...minimal, frames: '10-1' }, 'frames', /"10-1"/)
      fails({ ...minimal, frames: '1-x' }, 'frames')
      fails({ ...minimal, frames: '-3' }, 'frames', /negative/)
      fails({ ...minimal, frames: '' }, 'frames')
      fails({ ...minimal, frames: 1.5 }, 'frames')
      fails({ ...minimal, frames: ['1-3'] }, 'frames')
    })

    it('a malformed requirement', () => {
      fails({ ...minimal, requirements: ['cpus>=4', 'ram>=lots'] }, 'requirements[1]', /requirements\[1\]: requirement "ram>=lots": bad value/)
      fails({ ...minimal, requirements: ['frobs=1'] }, 'requirements[0]', /unknown key/)
      fails({ ...minimal, requirements: [4] }, 'requirements[0]')
      fails({ ...minimal, requirements: { ram: '16G' } }, 'requirements')
    })

    it('a priority out of range', () => {
      const e = fails({ ...minimal, priority: 1001 }, 'priority')
      expect(e.message).toBe('priority: must be an integer from 0 to 1000')
      fails({ ...minimal, priority: -1 }, 'priority')
      fails({ ...minimal, priority: 2.5 }, 'priority')
      fails({ ...minimal, priority: '3' }, 'priority')
    })

    it('bad numbers', () => {
      fails({ ...minimal, chunk: 0 }, 'chunk')
      fails({ ...minimal, width: 0 }, 'width')
      fails({ ...minimal, height: 1e6 }, 'height')
      fails({ ...minimal, maxAttempts: 0 }, 'maxAttempts')
      fails({ ...minimal, frameTimeoutSec: 0 }, 'frameTimeoutSec')
      fails({ ...minimal, frameTimeoutSec: Infinity }, 'frameTimeoutSec')
      fails({ ...minimal, allowScripts: 'yes' }, 'allowScripts')
    })

    it('bad notify targets', () => {
      fails({ ...minimal, notify: ['ftp://example.com'] }, 'notify[0]', /unsupported scheme ftp:/)
      fails({ ...minimal, notify: ['mailto:a@b.c', 'http://example.com/hook'] }, 'notify[1]', /loopback/)
      fails({ ...minimal, notify: ['mailto:nobody'] }, 'notify[0]', /mail address/)
      fails({ ...minimal, notify: ['not a uri'] }, 'notify[0]', /not a URI/)
      fails({ ...minimal, notify: ['javascript:alert(1)'] }, 'notify[0]')
    })

    it('bad names, paths and output patterns', () => {
      fails({ ...minimal, name: '' }, 'name')
      fails({ ...minimal, name: 'a\nb' }, 'name')
      fails({ ...minimal, scene: 3 }, 'scene')
      fails({ ...minimal, files: ['ok', ''] }, 'files[1]')
      fails({ ...minimal, outputPattern: '../evil_####.png' }, 'outputPattern', /file name/)
      fails({ ...minimal, outputPattern: 'still.png' }, 'outputPattern', /#/)
      fails({ ...minimal, user: '' }, 'user')
    })
  })
})

describe('jobRequirements', () => {
  it('adds the renderer to the spec requirements', () => {
    const spec = validateJobSpec({ ...minimal, renderer: 'povray@3.7', requirements: ['ram>=1G'] }, who)
    expect(jobRequirements(spec)).toEqual([
      { key: 'povray', op: '=', value: '3.7' },
      { key: 'ram', op: '>=', value: 1024 ** 3 }
    ])
    expect(jobRequirements(validateJobSpec(minimal, who))[0]).toEqual({ key: 'renderer', op: '=', value: 'povray' })
  })
})

describe('loadJobSpecFile', () => {
  let dir: string
  beforeAll(async () => { dir = await mkdtemp(path.join(tmpdir(), 'farmesh-spec-')) })
  afterAll(async () => { await rm(dir, { recursive: true, force: true }) })

  it('reads JSON and resolves paths against the file', async () => {
    const file = path.join(dir, 'job.json')
    await writeFile(file, JSON.stringify({ ...minimal, scene: 'scene.pov', files: ['inc/', '/abs/tex.png'] }))
    const raw = await loadJobSpecFile(file)
    const spec = validateJobSpec(raw, who)
    expect(spec.scene).toBe(path.join(dir, 'scene.pov'))
    expect(spec.files).toEqual([path.join(dir, 'inc'), '/abs/tex.png'])
  })

  it('reads YAML, keeping versions and frame lists as text', async () => {
    const file = path.join(dir, 'job.yaml')
    await writeFile(file, [
      'name: shot-030',
      'frames: 1-240:2',
      'renderer:',
      '  name: blender',
      '  version: 3.10',
      'priority: 3',
      'scene: shots/030.blend',
      'files: textures',
      'requirements:',
      '  - ram>=16G',
      '  - cpus>=8',
      'notify:',
      '  - mailto:lead@example.com'
    ].join('\n'))
    const spec = validateJobSpec(await loadJobSpecFile(file), who)
    expect(spec.renderer).toEqual({ name: 'blender', version: '3.10' })
    expect(spec.frames).toBe('1-240:2')
    expect(spec.priority).toBe(3)
    expect(spec.scene).toBe(path.join(dir, 'shots/030.blend'))
    expect(spec.files).toEqual([path.join(dir, 'textures')])
    expect(spec.requirements).toEqual(['ram>=16G', 'cpus>=8'])
  })

  it('reads .yml and a numeric frame', async () => {
    const file = path.join(dir, 'job.yml')
    await writeFile(file, 'name: x\nframes: 12\nrenderer: builtin\nscene: s.json\n')
    expect(validateJobSpec(await loadJobSpecFile(file), who).frames).toBe('12')
  })

  it('reports unreadable, unparsable and unsupported files', async () => {
    await expect(loadJobSpecFile(path.join(dir, 'missing.json'))).rejects.toThrow(/^file: cannot read/)
    const bad = path.join(dir, 'bad.json')
    await writeFile(bad, '{ nope')
    await expect(loadJobSpecFile(bad)).rejects.toThrow(/^file: cannot parse/)
    const badYaml = path.join(dir, 'bad.yaml')
    await writeFile(badYaml, 'name: [unclosed\n')
    await expect(loadJobSpecFile(badYaml)).rejects.toThrow(/^file: cannot parse/)
    await expect(loadJobSpecFile(path.join(dir, 'job.txt'))).rejects.toThrow(JobSpecError)
  })

  it('leaves a non-object for validateJobSpec to reject', async () => {
    const file = path.join(dir, 'list.yaml')
    await writeFile(file, '- a\n- b\n')
    const raw = await loadJobSpecFile(file)
    expect(() => validateJobSpec(raw, who)).toThrow(/^spec: must be an object/)
  })
})
