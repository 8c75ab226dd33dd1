import { afterAll, describe, expect, it } from 'vitest'
import { execFile } from 'node:child_process'
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { CLI } from './loopback-node.js'
import { decodePng } from '../../dist/node/renderers/png.js'

const run = promisify(execFile)

describe('farmesh demo (the README\'s first command)', () => {
  let dir: string
  afterAll(async () => { if (dir != null) await rm(dir, { recursive: true, force: true }) })

  it('renders 48 frames across 3 nodes, writes a contact sheet and a GIF, stops its nodes, exits 0', async () => {
    dir = await mkdtemp(join(tmpdir(), 'farmesh-demo-test-'))
    const { stdout } = await run(process.execPath, [CLI, 'demo'], { cwd: dir, timeout: 180_000 })
    expect(stdout).toMatch(/48 frames rendered on 3 hosts/)
    const out = join(dir, 'farmesh-demo')
    const frames = (await readdir(join(out, 'frames'))).filter(n => n.endsWith('.png')).sort()
    expect(frames).toHaveLength(48)
    const first = decodePng(await readFile(join(out, 'frames', frames[0])))
    const last = decodePng(await readFile(join(out, 'frames', frames[47])))
    expect(first.width).toBe(320)
    expect(Buffer.compare(first.rgba, last.rgba)).not.toBe(0)
    expect((await readFile(join(out, 'preview.gif'))).subarray(0, 6).toString()).toBe('GIF89a')
    expect((await readFile(join(out, 'contact-sheet.png'))).subarray(1, 4).toString()).toBe('PNG')
    // the demo's nodes are gone: no process still runs on its temporary data directories
    const ps = await run('ps', ['-eo', 'args'])
    expect(ps.stdout).not.toMatch(/farmesh-demo-[A-Za-z0-9]+\/node\d/)
  })
})
