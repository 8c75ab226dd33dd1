import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createHash, randomBytes } from 'node:crypto'
import { accessSync, constants, existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createServer, type Server } from 'node:net'
import { networkInterfaces, tmpdir } from 'node:os'
import { join, relative } from 'node:path'
import { PNG } from 'pngjs'
import type { RendererAdapter, RenderTask } from '../../node/renderers/adapter.js'
import { builtinAdapter } from '../../node/renderers/builtin.js'
import { povrayAdapter } from '../../node/renderers/povray.js'
import { runTask } from '../../node/renderers/run-task.js'
import { bwrapWrap, checkSandboxOutputs, farmeshInstallPaths, remoteRunMode, sandboxStatus, SandboxError, unsandboxedAllowed, type BwrapOptions } from '../../node/sandbox/bwrap.js'
import { newBundleNonce, packBundle, unpackBundle, type BundleInputFile } from '../../storage/bundle.js'
import { OriginStore, type MaterializedJob } from '../../storage/origin-store.js'
import { generateSiteKeys, saveSiteKeys } from '../../storage/site-keys.js'
import { onPath } from '../harness/on-path.js'

/**
 * Remote work in the real sandbox: a job's own process tries everything the
 * issue lists (other origins' stores, /etc/shadow, the node's keys, writes
 * outside its outputs, the network) and each attempt must fail, leaving the
 * job's output directory the only thing changed on the host.
 */

const REPO = join(import.meta.dirname, '..', '..')
const BUILTIN_CLI = join(REPO, 'dist', 'node', 'renderers', 'builtin-cli.js')
const status = await sandboxStatus()
const skipNote = status.available ? '' : ` — SKIPPED: ${status.reason ?? 'bubblewrap unavailable'} (apt-get install -y bubblewrap)`
if (!status.available) console.warn(`sandbox tests skipped: ${status.reason}`)


/** /var/tmp when we can: under /tmp every parent of the job would sit on the sandbox's own writable /tmp. */
function scratchRoot (): string {
  try { accessSync('/var/tmp', constants.W_OK); return '/var/tmp' } catch { return tmpdir() }
}

const sha256 = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex')

/** path → size:sha256:mode of every file and link under `dir`, except under `skip`. */
function snapshot (dir: string, skip: string[] = []): Map<string, string> {
  const out = new Map<string, string>()
  const walk = (d: string): void => {
    if (skip.includes(d)) return
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name)
      const st = lstatSync(p)
      if (e.isDirectory()) { out.set(relative(dir, p) + '/', `dir:${st.mode}`); walk(p) } else out.set(relative(dir, p), `${st.size}:${st.isFile() ? sha256(readFileSync(p)) : 'link'}:${st.mode}`)
    }
  }
  walk(dir)
  return out
}

function png (width: number, height: number, rgb: [number, number, number]): Buffer {
  const img = new PNG({ width, height })
  for (let i = 0; i < width * height; i++) img.data.set([...rgb, 255], i * 4)
  return PNG.sync.write(img)
}

const BUILTIN_SCENE = {
  version: 1,
  width: 48,
  height: 32,
  background: [0.2, 0.3, 0.5],
  camera: { keyframes: [{ frame: 1, position: [0, 1, 5], lookAt: [0, 0, 0], fov: 45 }] },
  lights: [{ position: [3, 6, 4], color: [1, 1, 1], intensity: 1 }],
  objects: [
    { type: 'plane', point: [0, -1, 0], normal: [0, 1, 0], color: [0.9, 0.9, 0.9], checker: [0.1, 0.1, 0.1] },
    { type: 'sphere', center: [0, 0, 0], radius: 1, color: [0.8, 0.2, 0.1], reflect: 0.3 }
  ]
}

const WOOD_ORIGINAL = '/mnt/projects/show/tex/wood.png'
const POV_SCENE = `#version 3.7;
global_settings { assumed_gamma 1.0 }
camera { location <0, 0, -2> look_at <0, 0, 0> }
light_source { <0, 0, -5> color rgb 1 }
plane { z, 0 pigment { image_map { png "${WOOD_ORIGINAL}" } scale 4 translate <-2, -2, 0> } finish { ambient 1 diffuse 0 } }
`

describe.skipIf(!status.available)(`bubblewrap sandbox${skipNote}`, () => {
  let base: string
  let dataDir: string
  let hostTmp: string
  let job: MaterializedJob
  let otherBlob: string
  let otherOriginDir: string
  let server: Server
  let connections = 0
  const wood = png(8, 8, [40, 200, 60])

  beforeAll(async () => {
    base = mkdtempSync(join(scratchRoot(), 'farmesh-sandbox-'))
    hostTmp = mkdtempSync(join(tmpdir(), 'farmesh-sandbox-host-'))
    writeFileSync(join(hostTmp, 'keep.txt'), 'host tmp file')
    dataDir = join(base, 'data')
    mkdirSync(dataDir, { recursive: true, mode: 0o700 })
    writeFileSync(join(dataDir, 'identity.key'), 'IDENTITY-SECRET', { mode: 0o600 })
    const remote = generateSiteKeys('remote')
    const origin = generateSiteKeys('origin')
    const other = generateSiteKeys('other')
    await saveSiteKeys(join(dataDir, 'site-keys.json'), remote)

    // the job arrives the way it will in production: packed at the origin, unpacked and materialized here
    const src = join(base, 'origin-host')
    mkdirSync(src)
    const input = (path: string, data: Buffer, original?: string): BundleInputFile => {
      const source = join(src, path.replace(/\//g, '_'))
      writeFileSync(source, data)
      return { path, hash: sha256(data), size: data.byteLength, source, ...(original !== undefined ? { original } : {}) }
    }
    const files = [
      input('scene.json', Buffer.from(JSON.stringify(BUILTIN_SCENE)), '/mnt/projects/show/scene.json'),
      input('scene.pov', Buffer.from(POV_SCENE), '/mnt/projects/show/scene.pov'),
      input('tex/wood.png', wood, WOOD_ORIGINAL)
    ]
    const store = new OriginStore(join(dataDir, 'origins'))
    await store.init()
    const bundle = packBundle({
      job: { name: 'sandbox test' }, files, signer: origin.signPrivate, recipientEncPub: remote.encPublic, recipientSiteId: remote.siteId,
      jobId: 'j1', originSiteId: origin.siteId, createdAt: Date.now(), nonce: newBundleNonce()
    })
    const unpacked = await unpackBundle(bundle, {
      recipientEncPriv: remote.encPrivate, recipientSiteId: remote.siteId, trustedSigners: id => id === origin.siteId ? origin.signPublic : undefined,
      seenNonce: () => false, tempDir: store.intakeDir()
    })
    job = await store.materializeJob(origin.siteId, 'j1', unpacked.manifest, unpacked.files)
    rmSync(unpacked.dir, { recursive: true, force: true })

    // another origin's store on the same node
    const otherStore = await store.blobs(other.siteId)
    const secret = join(base, 'other-secret.txt')
    writeFileSync(secret, 'OTHER-ORIGIN-SECRET')
    const info = await otherStore.putFile(secret)
    otherBlob = otherStore.path(info.hash)
    otherOriginDir = store.originDir(other.siteId)

    server = createServer(sock => { connections++; sock.destroy() })
    await new Promise<void>(resolve => server.listen(0, '0.0.0.0', resolve))
  })

  afterAll(async () => {
    await new Promise<void>(resolve => server?.close(() => resolve()) ?? resolve())
    if (base !== undefined) rmSync(base, { recursive: true, force: true })
    if (hostTmp !== undefined) rmSync(hostTmp, { recursive: true, force: true })
  })

  function wrapOptions (over: Partial<BwrapOptions> = {}): BwrapOptions {
    return { jobDir: job.jobDir, inputDir: job.inputDir, outputDir: job.outputDir, pathMap: job.pathMap, allowRead: farmeshInstallPaths(), hidden: [dataDir], ...over }
  }

  function scriptAdapter (script: string, probe: unknown, outputs: string[]): RendererAdapter {
    return {
      name: 'script',
      commandLine: task => ({ file: process.execPath, args: ['-e', script], cwd: task.inputDir, env: { PROBE: JSON.stringify(probe) } }),
      parseProgress: () => undefined,
      expectedOutputs: task => outputs.map(o => join(task.outputDir, o))
    }
  }

  function task (over: Partial<RenderTask> = {}): RenderTask {
    return { scene: join(job.inputDir, 'scene.json'), inputDir: job.inputDir, outputDir: job.outputDir, start: 1, end: 1, ...over }
  }

  function clearOutputs (): void {
    for (const name of readdirSync(job.outputDir)) rmSync(join(job.outputDir, name), { recursive: true, force: true })
  }

  it('lets every escape attempt fail and changes nothing but the output directory', async () => {
    clearOutputs()
    const lan = Object.values(networkInterfaces()).flat().find(i => i !== undefined && i.family === 'IPv4' && !i.internal)?.address
    const marker = `farmesh-escape-${randomBytes(4).toString('hex')}`
    const probe = {
      otherBlob,
      otherOriginDir,
      originsDir: join(dataDir, 'origins'),
      dataDir,
      inputDir: job.inputDir,
      inputFile: join(job.inputDir, 'scene.json'),
      jobDir: job.jobDir,
      hostTmp,
      marker,
      port: (server.address() as { port: number }).port,
      hosts: ['127.0.0.1', ...(lan !== undefined ? [lan] : [])]
    }
    const script = `
const fs = require('fs'), net = require('net'), path = require('path')
const P = JSON.parse(process.env.PROBE)
const r = {}
const attempt = (name, fn) => { try { fn(); r[name] = 'SUCCEEDED' } catch (e) { r[name] = 'failed: ' + (e.code || e.message) } }
const visible = (dir, name) => { if (!fs.readdirSync(dir).includes(name)) throw new Error('not visible') }
attempt('read another origin\\'s blob', () => fs.readFileSync(P.otherBlob))
attempt('list another origin', () => visible(P.originsDir, path.basename(P.otherOriginDir)))
attempt('read /etc/shadow', () => fs.readFileSync('/etc/shadow'))
attempt('read /etc/passwd', () => fs.readFileSync('/etc/passwd'))
attempt('read the node identity key', () => fs.readFileSync(path.join(P.dataDir, 'identity.key')))
attempt('read the site keys', () => fs.readFileSync(path.join(P.dataDir, 'site-keys.json')))
attempt('list the data dir', () => visible(P.dataDir, 'identity.key'))
attempt('list /root', () => { if (fs.readdirSync('/root').length === 0) throw new Error('empty') })
attempt('list /home', () => { if (fs.readdirSync('/home').length === 0) throw new Error('empty') })
attempt('read host /tmp', () => fs.readFileSync(path.join(P.hostTmp, 'keep.txt')))
attempt('write into the inputs', () => fs.writeFileSync(path.join(P.inputDir, 'evil'), 'x'))
attempt('overwrite an input', () => fs.writeFileSync(P.inputFile, 'x'))
attempt('chmod an input', () => fs.chmodSync(P.inputFile, 0o666))
attempt('write into the job dir', () => fs.writeFileSync(path.join(P.jobDir, 'evil'), 'x'))
attempt('write into the data dir', () => fs.writeFileSync(path.join(P.dataDir, 'evil'), 'x'))
attempt('replace the identity key', () => fs.writeFileSync(path.join(P.dataDir, 'identity.key'), 'x'))
attempt('write into another origin', () => fs.writeFileSync(path.join(P.otherOriginDir, 'evil'), 'x'))
attempt('write to /', () => fs.writeFileSync('/' + P.marker, 'x'))
attempt('write to /usr', () => fs.writeFileSync('/usr/' + P.marker, 'x'))
attempt('write into host /tmp', () => fs.writeFileSync(path.join(P.hostTmp, 'evil'), 'x'))
attempt('see host processes', () => { if (fs.readdirSync('/proc').filter(n => /^\\d+$/.test(n)).length < 10) throw new Error('own pid namespace') })
attempt('mount', () => require('child_process').execFileSync('mount', ['-t', 'tmpfs', 'x', '/mnt'], { stdio: 'pipe' }))
attempt('new user namespace', () => require('child_process').execFileSync('unshare', ['-Ur', 'true'], { stdio: 'pipe' }))
// the private /tmp works (renderers need one) but dies with the sandbox
fs.writeFileSync('/tmp/' + P.marker, 'private')
const connect = (host) => new Promise(resolve => {
  const s = net.connect({ host, port: P.port, timeout: 2000 })
  s.on('connect', () => { s.destroy(); resolve('SUCCEEDED') })
  s.on('timeout', () => { s.destroy(); resolve('failed: timeout') })
  s.on('error', e => resolve('failed: ' + e.code))
})
;(async () => {
  for (const h of P.hosts) r['connect to ' + h] = await connect(h)
  fs.writeFileSync(path.join(process.cwd(), '..', 'out', 'report.json'), JSON.stringify(r, null, 2))
  console.log(JSON.stringify(r))
})()
`
    const before = snapshot(base, [job.outputDir])
    const tmpBefore = snapshot(hostTmp)
    const result = await runTask(scriptAdapter(script, probe, ['report.json']), task(), { wrap: bwrapWrap(wrapOptions()), timeoutMs: 60_000 })
    expect(result.error, result.logTail.join('\n')).toBeUndefined()
    expect(result.ok).toBe(true)
    const report = JSON.parse(readFileSync(join(job.outputDir, 'report.json'), 'utf8')) as Record<string, string>
    console.log('sandbox escape attempts:\n' + Object.entries(report).map(([k, v]) => `  ${k}: ${v}`).join('\n'))
    expect(Object.keys(report).length).toBeGreaterThanOrEqual(24)
    const succeeded = Object.entries(report).filter(([, v]) => !v.startsWith('failed'))
    expect(succeeded).toEqual([])
    expect(connections).toBe(0)

    // nothing changed on the host but the job's output directory
    expect(snapshot(base, [job.outputDir])).toEqual(before)
    expect(snapshot(hostTmp)).toEqual(tmpBefore)
    for (const p of ['/' + marker, '/usr/' + marker, '/tmp/' + marker]) expect(existsSync(p)).toBe(false)
    expect(readdirSync(job.outputDir)).toEqual(['report.json'])
  })

  it('maps the original absolute paths of inputs to the bundle\'s copies', async () => {
    clearOutputs()
    const script = `
const fs = require('fs')
const data = fs.readFileSync(${JSON.stringify(WOOD_ORIGINAL)})
let write = 'failed'
try { fs.writeFileSync(${JSON.stringify(WOOD_ORIGINAL)}, 'x'); write = 'SUCCEEDED' } catch (e) { write = 'failed: ' + e.code }
fs.writeFileSync('../out/mapped.json', JSON.stringify({ hash: require('crypto').createHash('sha256').update(data).digest('hex'), write, siblings: fs.readdirSync('/mnt/projects/show') }))
`
    const result = await runTask(scriptAdapter(script, {}, ['mapped.json']), task(), { wrap: bwrapWrap(wrapOptions()) })
    expect(result.error, result.logTail.join('\n')).toBeUndefined()
    const mapped = JSON.parse(readFileSync(join(job.outputDir, 'mapped.json'), 'utf8'))
    expect(mapped.hash).toBe(sha256(wood))
    expect(mapped.write).toMatch(/^failed/)
    expect(mapped.siblings.sort()).toEqual(['scene.json', 'scene.pov', 'tex'])
    expect(existsSync('/mnt/projects/show/tex/wood.png') && readFileSync('/mnt/projects/show/tex/wood.png').equals(wood)).toBe(false)
  })

  it('lets only regular files out of the output directory', async () => {
    clearOutputs()
    // the job cannot read the key, but it can point an "output" at it for the node to read
    const script = `
const fs = require('fs')
fs.symlinkSync(${JSON.stringify(join(dataDir, 'identity.key'))}, '../out/frame_0001.png')
fs.symlinkSync(${JSON.stringify(dataDir)}, '../out/sub')
fs.writeFileSync('../out/good.png', 'png')
fs.linkSync('../out/good.png', '../out/hard.png')
require('child_process').execFileSync('mkfifo', ['../out/fifo.png'])
`
    const result = await runTask(scriptAdapter(script, {}, ['good.png']), task(), { wrap: bwrapWrap(wrapOptions()) })
    expect(result.error, result.logTail.join('\n')).toBeUndefined()
    const o = (n: string): string => join(job.outputDir, n)
    const check = await checkSandboxOutputs(job.outputDir, [o('frame_0001.png'), o('sub/identity.key'), o('hard.png'), o('fifo.png'), o('missing.png'), join(dataDir, 'identity.key'), o('../in/scene.json')])
    expect(check.accepted).toEqual([])
    expect(check.refused.map(r => r.reason)).toEqual([
      'a symbolic link', 'under a link leading out of the output directory', 'a hard link', 'not a regular file', 'unreadable (ENOENT)',
      'outside the output directory', 'outside the output directory'
    ])
    clearOutputs()
    writeFileSync(o('frame_0001.png'), 'png')
    expect((await checkSandboxOutputs(job.outputDir, [o('frame_0001.png')])).accepted).toEqual([o('frame_0001.png')])
  })

  it('kills the sandboxed process with its parent', async () => {
    clearOutputs()
    const marker = `farmesh-sleeper-${randomBytes(4).toString('hex')}`
    const script = `setInterval(() => {}, 1e6) // ${marker}`
    const result = await runTask(scriptAdapter(script, {}, ['never.png']), task(), { wrap: bwrapWrap(wrapOptions()), timeoutMs: 1500, killGraceMs: 500 })
    expect(result.timedOut).toBe(true)
    await new Promise(resolve => setTimeout(resolve, 1000))
    const alive = readdirSync('/proc').filter(n => /^\d+$/.test(n)).filter(pid => {
      try { return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(marker) } catch { return false }
    })
    expect(alive).toEqual([])
  })

  it('runs the builtin renderer unchanged inside the sandbox', async () => {
    expect(existsSync(BUILTIN_CLI), 'build first: npx tsc -p tsconfig.json').toBe(true)
    clearOutputs()
    const adapter = builtinAdapter(BUILTIN_CLI)
    const sandboxed = await runTask(adapter, task(), { wrap: bwrapWrap(wrapOptions()) })
    expect(sandboxed.error, sandboxed.logTail.join('\n')).toBeUndefined()
    expect(sandboxed.ok).toBe(true)
    // the same frame rendered outside the sandbox has the same pixels
    const outside = mkdtempSync(join(base, 'unsandboxed-'))
    const plain = await runTask(adapter, task({ outputDir: outside }))
    expect(plain.ok).toBe(true)
    const a = PNG.sync.read(readFileSync(sandboxed.outputs[0]))
    const b = PNG.sync.read(readFileSync(plain.outputs[0]))
    expect([a.width, a.height]).toEqual([48, 32])
    expect(a.data.equals(b.data)).toBe(true)
    // the renderer's CPU time reaches us through bwrap (billing depends on it)
    expect(sandboxed.cpuSeconds).toBeGreaterThan(0)
  })

  it.skipIf(!onPath('povray'))('runs POV-Ray inside the sandbox, reading a texture by its original absolute path', async () => {
    clearOutputs()
    const povTask = task({ scene: join(job.inputDir, 'scene.pov'), width: 32, height: 24 })
    const result = await runTask(povrayAdapter, povTask, { wrap: bwrapWrap(wrapOptions()) })
    expect(result.error, result.logTail.join('\n')).toBeUndefined()
    expect(result.ok).toBe(true)
    const img = PNG.sync.read(readFileSync(result.outputs[0]))
    expect([img.width, img.height]).toEqual([32, 24])
    const mid = (12 * 32 + 16) * 4
    expect(img.data[mid + 1]).toBeGreaterThan(img.data[mid]) // the green texture, not a default pigment
    // without the mapping the texture is simply not there
    clearOutputs()
    const unmapped = await runTask(povrayAdapter, povTask, { wrap: bwrapWrap(wrapOptions({ pathMap: [] })) })
    expect(unmapped.ok).toBe(false)
    expect(unmapped.logTail.join('\n')).toMatch(/wood\.png/)
  })

  it('refuses mappings and read paths that would expose the host', () => {
    const wrap = (over: Partial<BwrapOptions>): unknown => { try { bwrapWrap(wrapOptions(over)); return 'accepted' } catch (e) { return (e as Error).name } }
    const copy = join(job.inputDir, 'tex/wood.png')
    expect(wrap({ pathMap: [{ original: '/mnt/x.png', inside: join(dataDir, 'identity.key') }] })).toBe('SandboxError')
    expect(wrap({ pathMap: [{ original: '/mnt/x.png', inside: join(job.inputDir, '../../../../identity.key') }] })).toBe('SandboxError')
    expect(wrap({ pathMap: [{ original: '/usr/bin/x', inside: copy }] })).toBe('SandboxError')
    expect(wrap({ pathMap: [{ original: '/proc/x', inside: copy }] })).toBe('SandboxError')
    expect(wrap({ pathMap: [{ original: job.outputDir + '/x', inside: copy }] })).toBe('SandboxError')
    expect(wrap({ pathMap: [{ original: '/mnt/../etc/shadow', inside: copy }] })).toBe('SandboxError')
    expect(wrap({ pathMap: [{ original: '/mnt/a', inside: copy }, { original: '/mnt/a/b', inside: copy }] })).toBe('SandboxError')
    expect(wrap({ allowRead: [dataDir] })).toBe('SandboxError')
    expect(wrap({ allowRead: ['/'] })).toBe('SandboxError')
    expect(wrap({})).toBe('accepted')
    expect(() => bwrapWrap(wrapOptions())({ file: 'x', args: [], cwd: job.inputDir, env: { 'A=B': 'c' } })).toThrow(SandboxError)
  })
})

describe('remote run policy', () => {
  it('refuses remote work without a sandbox unless explicitly allowed', () => {
    expect(remoteRunMode(true, false)).toBe('sandbox')
    expect(remoteRunMode(false, undefined)).toBe('refuse')
    expect(remoteRunMode(false, 'yes')).toBe('refuse')
    expect(remoteRunMode(false, true)).toBe('unsandboxed')
    expect(unsandboxedAllowed(1)).toBe(false)
  })
})
