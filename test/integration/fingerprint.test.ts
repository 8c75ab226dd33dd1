import { execFileSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import {
  collectFingerprint, fingerprintChanged, probeRenderers, readLicenses, watchFingerprint
} from '../../node/fingerprint.js'
import type { Fingerprint } from '../../node/fingerprint-types.js'
import { onPath } from '../harness/on-path.js'


const hasPovray = onPath('povray')
const hasBlender = onPath('blender')
const pkgVersion = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version

let dataDir: string
let emptyBin: string
beforeEach(async () => {
  dataDir = await mkdtemp(path.join(os.tmpdir(), 'farmesh-fp-'))
  emptyBin = await mkdtemp(path.join(os.tmpdir(), 'farmesh-fp-bin-'))
})
afterEach(async () => {
  await rm(dataDir, { recursive: true, force: true })
  await rm(emptyBin, { recursive: true, force: true })
})

describe('collectFingerprint', () => {
  it('reports plausible values for this machine', async () => {
    const fp = await collectFingerprint({ dataDir, slotsTotal: 2, slotsBusy: 1 })

    // nproc also honours OMP_NUM_THREADS/OMP_THREAD_LIMIT, which are not CPUs
    const env = { ...process.env }
    delete env.OMP_NUM_THREADS
    delete env.OMP_THREAD_LIMIT
    const nproc = Number(execFileSync('nproc', { env, encoding: 'utf8' }).trim())
    expect(fp.cpu.count).toBe(nproc)

    const memTotalKb = Number(/^MemTotal:\s+(\d+)/m.exec(readFileSync('/proc/meminfo', 'utf8'))?.[1])
    expect(Math.abs(fp.ram.total - memTotalKb * 1024)).toBeLessThanOrEqual(memTotalKb * 1024 * 0.1)
    expect(fp.ram.free).toBeGreaterThan(0)
    expect(fp.ram.free).toBeLessThanOrEqual(fp.ram.total)
    expect(fp.swap.free).toBeLessThanOrEqual(fp.swap.total)

    expect(fp.hostname).toBe(os.hostname())
    expect(fp.os.family).toBe('Linux')
    expect(fp.os.release).toBe(os.release())
    expect(fp.os.type).not.toBe('')
    expect(fp.machine.family).toBe(os.machine())
    for (const v of Object.values(fp.machine)) expect(v).not.toBe('')
    expect(fp.cpu.model).not.toBe('')
    expect(fp.cpu.speedMHz).toBeGreaterThanOrEqual(0)
    expect(Array.isArray(fp.gpus)).toBe(true)
    expect(fp.licenses).toEqual([])
    expect(fp.slots).toEqual({ total: 2, busy: 1 })

    expect(fp.renderers).toContainEqual({ name: 'builtin', version: pkgVersion })
    expect(fp.renderers).toContainEqual({ name: 'command', version: '1' })
    // plain JSON, so it can travel in adverts unchanged
    expect(JSON.parse(JSON.stringify(fp))).toEqual(fp)
  }, 30_000)

  it.skipIf(!hasPovray)('detects povray', async () => {
    const fp = await collectFingerprint({ dataDir, slotsTotal: 1 })
    expect(fp.renderers.find(r => r.name === 'povray')?.version).toMatch(/^3\.7/)
  }, 30_000)

  it.skipIf(!hasBlender)('detects blender', async () => {
    const fp = await collectFingerprint({ dataDir, slotsTotal: 1 })
    expect(fp.renderers.find(r => r.name === 'blender')?.version).toMatch(/^\d+\.\d+/)
  }, 30_000)

  it('reads licences from the data dir', async () => {
    await writeFile(path.join(dataDir, 'licenses'), '# site licences\npovray-pro\n\n  blender-studio  # until 2030\npovray-pro\n')
    expect(await readLicenses(dataDir)).toEqual(['povray-pro', 'blender-studio'])
    const fp = await collectFingerprint({ dataDir, slotsTotal: 1, renderers: [] })
    expect(fp.licenses).toEqual(['povray-pro', 'blender-studio'])
    expect(await readLicenses(path.join(dataDir, 'missing'))).toEqual([])
  })

  it('leaves out disabled renderers', async () => {
    const fp = await collectFingerprint({ dataDir, slotsTotal: 1, disabledRenderers: ['povray', 'builtin'] })
    const names = fp.renderers.map(r => r.name)
    expect(names).not.toContain('povray')
    expect(names).not.toContain('builtin')
    expect(names).toContain('command')
  }, 30_000)
})

describe('probeRenderers', () => {
  it.skipIf(!hasPovray)('finds binaries through the given PATH only', async () => {
    const without = await probeRenderers({ env: { ...process.env, PATH: emptyBin } })
    expect(without.map(r => r.name).sort()).toEqual(['builtin', 'command'])
    const withReal = await probeRenderers({ env: process.env })
    expect(withReal.map(r => r.name)).toContain('povray')
  }, 30_000)

  it('rejects when aborted', async () => {
    await expect(probeRenderers({ signal: AbortSignal.abort() })).rejects.toThrow()
  })
})

describe('fingerprintChanged', () => {
  it('ignores volatile fields only', async () => {
    const a = await collectFingerprint({ dataDir, slotsTotal: 2, renderers: [{ name: 'builtin', version: '1' }, { name: 'command', version: '1' }] })
    const clone = (): Fingerprint => structuredClone(a)

    const b = clone()
    b.ram.free += 123456
    b.swap.free += 1
    b.cpu.speedMHz += 100
    b.renderers.reverse()
    expect(fingerprintChanged(a, b)).toBe(false)

    const slots = clone(); slots.slots.total = 3
    expect(fingerprintChanged(a, slots)).toBe(true)
    const busy = clone(); busy.slots.busy = 1
    expect(fingerprintChanged(a, busy)).toBe(true)
    const lic = clone(); lic.licenses.push('povray-pro')
    expect(fingerprintChanged(a, lic)).toBe(true)
    const rend = clone(); rend.renderers.push({ name: 'povray', version: '3.7.0.10' })
    expect(fingerprintChanged(a, rend)).toBe(true)
    const ver = clone(); ver.renderers[0].version = '2'
    expect(fingerprintChanged(a, ver)).toBe(true)
  })
})

describe('watchFingerprint', () => {
  it.skipIf(!hasPovray)('reports a renderer that appears on refresh', async () => {
    const env = { ...process.env, PATH: emptyBin }
    const opts = { dataDir, slotsTotal: 1, env }
    const initial = await collectFingerprint(opts)
    expect(initial.renderers.map(r => r.name)).not.toContain('povray')

    const onChange = vi.fn()
    const w = watchFingerprint({ ...opts, initial, onChange, intervalMs: 60_000 })
    try {
      await w.refresh()
      expect(onChange).not.toHaveBeenCalled()

      // "install" povray: the watcher reads env at each refresh
      env.PATH = process.env.PATH
      await w.refresh()
      expect(onChange).toHaveBeenCalledTimes(1)
      const fp = onChange.mock.calls[0][0] as Fingerprint
      expect(fp.renderers.find(r => r.name === 'povray')?.version).toMatch(/^3\.7/)

      await w.refresh()
      expect(onChange).toHaveBeenCalledTimes(1)
    } finally {
      w.stop()
    }
  }, 30_000)

  it('reports a licence added to the data dir without an explicit refresh', async () => {
    const opts = { dataDir, slotsTotal: 1, disabledRenderers: ['blender', 'povray'] }
    const initial = await collectFingerprint(opts)
    const onChange = vi.fn()
    const w = watchFingerprint({ ...opts, initial, onChange, intervalMs: 60_000 }) // so only fs.watch can notice
    try {
      await writeFile(path.join(dataDir, 'licenses'), 'povray-pro\n')
      await vi.waitFor(() => expect(onChange).toHaveBeenCalled(), { timeout: 5_000 })
      expect((onChange.mock.calls.at(-1)?.[0] as Fingerprint).licenses).toEqual(['povray-pro'])
    } finally {
      w.stop()
    }
  }, 30_000)

  it('reports the first fingerprint when given none', async () => {
    const onChange = vi.fn()
    const w = watchFingerprint({ dataDir, slotsTotal: 4, disabledRenderers: ['blender', 'povray'], onChange })
    try {
      await w.refresh()
      expect(onChange).toHaveBeenCalledTimes(1)
      expect((onChange.mock.calls[0][0] as Fingerprint).slots.total).toBe(4)
    } finally {
      w.stop()
    }
  }, 30_000)

  it('stops calling back after stop()', async () => {
    const onChange = vi.fn()
    const w = watchFingerprint({ dataDir, slotsTotal: 1, disabledRenderers: ['blender', 'povray'], onChange, intervalMs: 50 })
    w.stop()
    await writeFile(path.join(dataDir, 'licenses'), 'x\n')
    await new Promise(resolve => setTimeout(resolve, 300))
    expect(onChange).not.toHaveBeenCalled()
  })
})
