import { describe, it, expect } from 'vitest'
import type { Fingerprint } from '../../node/fingerprint-types.js'
import {
  parseRequirement, parseRequirements, matchesRequirements, explainMismatch, versionMatches, compareVersions,
  RequirementError, formatRequirement, validateRequirement, parseSize, formatBytes, globMatches, REQUIREMENT_KEYS
} from '../../node/jobs/requirements.js'

const G = 1024 ** 3

function fingerprint (over: Partial<Fingerprint> = {}): Fingerprint {
  return {
    hostname: 'Render-07.studio.lan',
    machine: { family: 'workstation', type: 'x86_64', vendor: 'Dell', model: 'Precision 7920' },
    os: { family: 'linux', type: 'Linux', version: '6.5.0', release: '6.5.0-21-generic' },
    cpu: { count: 16, family: 'x86_64', model: 'Intel(R) Xeon(R) Gold 6230', speedMHz: 3100 },
    ram: { total: 8 * G, free: 6 * G },
    swap: { total: 4 * G, free: 4 * G },
    gpus: [{ vendor: 'NVIDIA', model: 'GeForce RTX 3090' }],
    renderers: [
      { name: 'builtin', version: '1.0.0' },
      { name: 'blender', version: '3.4.1' },
      { name: 'blender', version: '4.1.0' },
      { name: 'povray', version: '3.7.0.10' }
    ],
    licenses: ['povray-pro', 'redshift'],
    slots: { total: 4, busy: 0 },
    ...over
  }
}

const fp = fingerprint()
const ok = (...reqs: string[]): boolean => matchesRequirements(fp, parseRequirements(reqs))

describe('versionMatches', () => {
  it.each([
    ['6.5.0', '6.5', true],
    ['6.5.3', '6.5', true],
    ['6.50.0', '6.5', false],
    ['6.4.9', '6.5', false],
    ['6.5.0', '6.x', true],
    ['6.9', '6.*', true],
    ['7.0', '6.x', false],
    ['6.5.0', '6', true],
    ['6.5.0', '*', true],
    ['', '*', true],
    ['3.7.0.10', '3.7.0', true],
    ['3.7.1', '3.7.0', false],
    ['3.7', '3.7.0', true],
    ['3.7', '3.7.1', false],
    ['3.4.1', 'x.4', true],
    ['3.4.1', '3.x.1', true],
    ['3.4.2', '3.x.1', false],
    ['22.04', '22.4', true],
    ['6.5.0-21-generic', '6.5.0', true],
    ['6.5.0-21-generic', '6.5.1', false],
    ['3.10.2', '3.1', false],
    ['', '3', false]
  ])('%j vs %j → %s', (v, p, want) => {
    expect(versionMatches(v, p)).toBe(want)
  })

  it('orders versions numerically', () => {
    expect(compareVersions('3.10', '3.9')).toBe(1)
    expect(compareVersions('3.7', '3.7.0')).toBe(0)
    expect(compareVersions('2.93', '3.0')).toBe(-1)
  })
})

describe('parseRequirement', () => {
  it('parses numeric minimums with binary size suffixes', () => {
    expect(parseRequirement('ram>=16G')).toEqual({ key: 'ram', op: '>=', value: 16 * G })
    expect(parseRequirement('ram >= 512M')).toEqual({ key: 'ram', op: '>=', value: 512 * 1024 ** 2 })
    expect(parseRequirement('swap>=4G')).toEqual({ key: 'swap', op: '>=', value: 4 * G })
    expect(parseRequirement('ram.free>=1.5T').value).toBe(1.5 * 1024 ** 4)
    expect(parseRequirement('swap.free>=64k').value).toBe(64 * 1024)
    expect(parseRequirement('ram>=16GiB').value).toBe(16 * G)
    expect(parseRequirement('ram>=16GB').value).toBe(16 * G)
    expect(parseRequirement('ram>=1024').value).toBe(1024)
    expect(parseRequirement('cpus>=8')).toEqual({ key: 'cpus', op: '>=', value: 8 })
    expect(parseRequirement('cpu.speed>=3000')).toEqual({ key: 'cpu.speed', op: '>=', value: 3000 })
    expect(parseRequirement('cpu.speed>=3.2GHz').value).toBe(3200)
    expect(parseRequirement('gpus>=1')).toEqual({ key: 'gpus', op: '>=', value: 1 })
  })

  it('parses the other comparison operators', () => {
    expect(parseRequirement('cpus>8').op).toBe('>')
    expect(parseRequirement('cpus<=8').op).toBe('<=')
    expect(parseRequirement('cpus<8').op).toBe('<')
    expect(parseRequirement('cpus=8').op).toBe('=')
    expect(parseRequirement('cpus==8').op).toBe('=')
  })

  it('resolves aliases and key case', () => {
    expect(parseRequirement('cpu.count>=4').key).toBe('cpus')
    expect(parseRequirement('RAM>=1G').key).toBe('ram')
    expect(parseRequirement('ram.total>=1G').key).toBe('ram')
    expect(parseRequirement('licenses=povray-pro')).toEqual({ key: 'license', op: '=', value: 'povray-pro' })
    expect(parseRequirement('gpu.model=*RTX*').key).toBe('gpu')
  })

  it('parses renderers and renderer version patterns', () => {
    expect(parseRequirement('renderer=blender')).toEqual({ key: 'renderer', op: '=', value: 'blender' })
    expect(parseRequirement('renderer=Blender')).toEqual({ key: 'renderer', op: '=', value: 'blender' })
    expect(parseRequirement('blender=3.x')).toEqual({ key: 'blender', op: '=', value: '3.x' })
    expect(parseRequirement('renderer=povray@3.7')).toEqual({ key: 'povray', op: '=', value: '3.7' })
    expect(parseRequirement('blender>=3.6')).toEqual({ key: 'blender', op: '>=', value: '3.6' })
  })

  it('keeps string patterns as given', () => {
    expect(parseRequirement('hostname=render-*')).toEqual({ key: 'hostname', op: '=', value: 'render-*' })
    expect(parseRequirement('cpu.model = Intel(R) Xeon*')).toEqual({ key: 'cpu.model', op: '=', value: 'Intel(R) Xeon*' })
    expect(parseRequirement('os.version=6.*')).toEqual({ key: 'os.version', op: '=', value: '6.*' })
  })

  it.each([
    ['frobs>=3', /requirement "frobs>=3": unknown key "frobs"/],
    ['ram>=lots', /requirement "ram>=lots": bad value "lots" for ram/],
    ['ram>=-1G', /bad value/],
    ['cpus>=8.5', /whole number/],
    ['cpus>=', /missing value/],
    ['ram', /expected KEY=VALUE/],
    ['>=5', /expected KEY=VALUE/],
    ['renderer=maya', /unknown renderer "maya"/],
    ['renderer>=blender', /only supports =/],
    ['hostname>=a', /hostname only supports =/],
    ['license>=x', /only supports =/],
    ['license=a,b', /bad license name/],
    ['blender=3.x!', /bad version pattern/],
    ['blender=3.5*', /bad version pattern/],
    ['blender>=3.x', /needs a plain version/],
    ['os.version=', /missing value/]
  ])('rejects %j', (s, msg) => {
    let err: unknown
    try { parseRequirement(s) } catch (e) { err = e }
    expect(err).toBeInstanceOf(RequirementError)
    expect((err as Error).name).toBe('RequirementError')
    expect((err as Error).message).toMatch(msg)
  })

  it('produces plain JSON that round-trips', () => {
    for (const s of ['ram>=16G', 'hostname=render-*', 'blender=3.x', 'renderer=povray', 'license=redshift', 'cpu.speed<4000']) {
      const r = parseRequirement(s)
      expect(JSON.parse(JSON.stringify(r))).toEqual(r)
      expect(parseRequirement(formatRequirement(r))).toEqual(r)
      expect(validateRequirement(JSON.parse(JSON.stringify(r)))).toEqual(r)
    }
  })

  it('refuses malformed requirement objects from the wire', () => {
    expect(() => validateRequirement(null)).toThrow(RequirementError)
    expect(() => validateRequirement({ key: 'ram', op: '>=' })).toThrow(RequirementError)
    expect(() => validateRequirement({ key: 'nope', op: '=', value: 'x' })).toThrow(/unknown key/)
    expect(() => validateRequirement({ key: 'ram', op: '>=', value: '16G' })).toThrow(/not canonical/)
    expect(() => validateRequirement({ key: 'hostname', op: '=', value: 5 })).toThrow(/not canonical/)
  })

  it('lists its keys', () => {
    for (const k of ['hostname', 'os.family', 'os.type', 'os.version', 'machine.vendor', 'machine.model', 'machine.family',
      'machine.type', 'cpu.family', 'cpu.model', 'cpus', 'cpu.speed', 'ram', 'ram.free', 'swap', 'swap.free', 'gpus', 'gpu',
      'license', 'renderer', 'blender', 'povray', 'builtin', 'command']) {
      expect(REQUIREMENT_KEYS).toContain(k)
    }
  })
})

describe('matchesRequirements', () => {
  it('treats no requirements as "don\'t care" about everything', () => {
    expect(matchesRequirements(fp, [])).toBe(true)
    expect(explainMismatch(fp, [])).toBeUndefined()
    expect(matchesRequirements(fingerprint({ gpus: [], licenses: [], renderers: [] }), [])).toBe(true)
  })

  it('treats * as "don\'t care" for every kind of field', () => {
    const odd = fingerprint({ hostname: '', os: { family: '', type: '', version: '', release: '' } })
    for (const s of ['hostname=*', 'os.family=*', 'os.type=*', 'os.version=*', 'os.release=*', 'machine.vendor=*',
      'machine.model=*', 'machine.family=*', 'machine.type=*', 'cpu.family=*', 'cpu.model=*']) {
      expect(matchesRequirements(odd, [parseRequirement(s)])).toBe(true)
    }
  })

  it('matches strings exactly, case-insensitively, with * globs', () => {
    expect(ok('os.family=linux')).toBe(true)
    expect(ok('os.family=LINUX')).toBe(true)
    expect(ok('os.family=windows')).toBe(false)
    expect(ok('os.family=lin')).toBe(false)
    expect(ok('hostname=render-*')).toBe(true)
    expect(ok('hostname=*.studio.lan')).toBe(true)
    expect(ok('hostname=render-0?.studio.lan')).toBe(false)
    expect(ok('machine.vendor=dell')).toBe(true)
    expect(ok('machine.model=Precision*')).toBe(true)
    expect(ok('machine.family=workstation')).toBe(true)
    expect(ok('machine.type=x86_64')).toBe(true)
    expect(ok('machine.type=arm64')).toBe(false)
    expect(ok('cpu.family=x86_64')).toBe(true)
    expect(ok('cpu.model=*Xeon(R) Gold*')).toBe(true)
    expect(ok('os.type=Linux')).toBe(true)
  })

  it('matches version fields by pattern and comparison', () => {
    expect(ok('os.version=6.5')).toBe(true)
    expect(ok('os.version=6.x')).toBe(true)
    expect(ok('os.version=6.*')).toBe(true)
    expect(ok('os.version=6')).toBe(true)
    expect(ok('os.version=6.4')).toBe(false)
    expect(ok('os.version=5.x')).toBe(false)
    expect(ok('os.release=6.5.0')).toBe(true)
    expect(ok('os.version>=6.1')).toBe(true)
    expect(ok('os.version<6.5')).toBe(false)
  })

  it('checks numeric minimums', () => {
    expect(ok('cpus>=8')).toBe(true)
    expect(ok('cpus>=16')).toBe(true)
    expect(ok('cpus>16')).toBe(false)
    expect(ok('cpus=16')).toBe(true)
    expect(ok('cpus<=8')).toBe(false)
    expect(ok('cpus<32')).toBe(true)
    expect(ok('ram>=8G')).toBe(true)
    expect(ok('ram>=16G')).toBe(false)
    expect(ok('ram.free>=6G')).toBe(true)
    expect(ok('ram.free>=7G')).toBe(false)
    expect(ok('swap>=4G')).toBe(true)
    expect(ok('swap>=5G')).toBe(false)
    expect(ok('swap.free>=4096M')).toBe(true)
    expect(ok('cpu.speed>=3000')).toBe(true)
    expect(ok('cpu.speed>=3.2GHz')).toBe(false)
    expect(ok('gpus>=1')).toBe(true)
    expect(ok('gpus>=2')).toBe(false)
  })

  it('matches GPUs by model and vendor glob', () => {
    expect(ok('gpu=*RTX 3090')).toBe(true)
    expect(ok('gpu=*rtx*')).toBe(true)
    expect(ok('gpu=*A100*')).toBe(false)
    expect(ok('gpu.vendor=nvidia')).toBe(true)
    expect(ok('gpu.vendor=amd')).toBe(false)
    expect(matchesRequirements(fingerprint({ gpus: [] }), [parseRequirement('gpu=*')])).toBe(true)
  })

  it('requires licenses', () => {
    expect(ok('license=povray-pro')).toBe(true)
    expect(ok('licenses=redshift')).toBe(true)
    expect(ok('license=POVRAY-PRO')).toBe(true)
    expect(ok('license=arnold')).toBe(false)
    expect(ok('license=povray-pro', 'license=redshift')).toBe(true)
    expect(ok('license=povray-pro', 'license=arnold')).toBe(false)
    expect(ok('license=*')).toBe(true)
    expect(matchesRequirements(fingerprint({ licenses: [] }), [parseRequirement('license=*')])).toBe(false)
  })

  it('requires renderers, optionally at a version pattern', () => {
    expect(ok('renderer=blender')).toBe(true)
    expect(ok('renderer=command')).toBe(false)
    expect(ok('blender=3.x')).toBe(true)
    expect(ok('blender=4.1')).toBe(true)
    expect(ok('blender=3.4.1')).toBe(true)
    expect(ok('blender=3.5')).toBe(false)
    expect(ok('blender=*')).toBe(true)
    expect(ok('command=*')).toBe(false)
    expect(ok('povray=3.7')).toBe(true)
    expect(ok('povray=3.7.0')).toBe(true)
    expect(ok('povray=3.8')).toBe(false)
    expect(ok('renderer=povray@3.7')).toBe(true)
    expect(ok('blender>=4.0')).toBe(true)
    expect(ok('blender>=4.2')).toBe(false)
    expect(ok('builtin=1')).toBe(true)
  })

  it('needs every requirement', () => {
    expect(ok('cpus>=8', 'os.family=linux', 'blender=3.x', 'license=redshift')).toBe(true)
    expect(ok('cpus>=8', 'os.family=linux', 'blender=3.x', 'license=arnold')).toBe(false)
  })

  it('fails safe on a requirement object it does not understand', () => {
    expect(matchesRequirements(fp, [{ key: 'nope', op: '=', value: 'x' }])).toBe(false)
    expect(explainMismatch(fp, [{ key: 'nope', op: '=', value: 'x' }])).toMatch(/unknown requirement key "nope"/)
    expect(matchesRequirements(fp, [{ key: 'ram', op: '>=', value: '1' }])).toBe(false)
  })
})

describe('explainMismatch', () => {
  const why = (...reqs: string[]): string | undefined => explainMismatch(fp, parseRequirements(reqs))

  it('says which requirement fails first, in human terms', () => {
    expect(why('cpus>=8', 'ram>=16G', 'swap>=64G')).toBe('ram 8.0 GiB < required 16.0 GiB')
    expect(why('cpus>=32')).toBe('cpus 16 < required 32')
    expect(why('cpus<=8')).toBe('cpus 16 > required 8')
    expect(why('cpu.speed>=4000')).toBe('cpu.speed 3100 MHz < required 4000 MHz')
    expect(why('os.family=windows')).toBe('os.family "linux" does not match "windows"')
    expect(why('license=arnold')).toBe('license "arnold" not available')
    expect(why('renderer=command')).toBe('renderer command not installed')
    expect(why('command=1.x')).toBe('command not installed')
    expect(why('blender=2.x')).toBe('blender 3.4.1, 4.1.0 does not match required 2.x')
    expect(why('blender>=5')).toBe('blender 3.4.1, 4.1.0 does not match required >= 5')
    expect(why('gpu=*A100*')).toBe('gpu: no GPU matches "*A100*" (have: GeForce RTX 3090)')
    expect(why('cpus>=8')).toBeUndefined()
  })
})

describe('helpers', () => {
  it('parses and formats sizes', () => {
    expect(parseSize('16G')).toBe(16 * G)
    expect(parseSize('1t')).toBe(1024 ** 4)
    expect(parseSize('x')).toBeUndefined()
    expect(formatBytes(16 * G)).toBe('16.0 GiB')
    expect(formatBytes(1536 * 1024 ** 2)).toBe('1.5 GiB')
    expect(formatBytes(512)).toBe('512 B')
  })

  it('globs without treating regex characters specially', () => {
    expect(globMatches('a.b', 'a.b')).toBe(true)
    expect(globMatches('axb', 'a.b')).toBe(false)
    expect(globMatches('Intel(R) Core', 'intel(r)*')).toBe(true)
    expect(globMatches('anything', '*')).toBe(true)
  })
})
