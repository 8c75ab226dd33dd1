import { afterAll, describe, expect, it } from 'vitest'
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { startLoopbackNode, type LoopbackNode } from './loopback-node.js'
import { waitFor } from '../harness/wait.js'
import { demoScene } from '../../dist/node/renderers/demo-scene.js'

/**
 * Issue 5, faults: the remote site vanishing mid-job. Two one-node sites on
 * loopback (no multicast); the origin's silence timeout is shortened.
 */
describe('a federated site that vanishes mid-job', () => {
  const nodes: LoopbackNode[] = []
  let dir: string
  afterAll(async () => {
    await Promise.all(nodes.map(async n => { await n.stop() }))
    if (dir != null) await rm(dir, { recursive: true, force: true })
  })

  it('its unfinished frames come back to the origin, which finishes the job with every frame exactly once', async () => {
    dir = await mkdtemp(join(tmpdir(), 'farmesh-vanish-'))
    const a = await startLoopbackNode(['--site', `alpha-${process.pid}`, '--slots', '2'], undefined, { FARMESH_REMOTE_TIMEOUT_MS: '4000' })
    const b = await startLoopbackNode(['--site', `beta-${process.pid}`, '--slots', '2'])
    nodes.push(a, b)
    const siteOf = async (n: LoopbackNode): Promise<string | undefined> => JSON.parse((await n.cli('site', '--json')).stdout).siteId ?? undefined
    await waitFor(async () => (await siteOf(a)) != null && (await siteOf(b)) != null, { timeoutMs: 30_000, message: 'site identities' })
    const token = (await b.cli('federation', 'invite')).stdout.trim().split('\n').pop() as string
    expect((await a.cli('federation', 'join', token)).code).toBe(0)

    const scene = join(dir, 'scene.json')
    await writeFile(scene, JSON.stringify(demoScene(16)))
    const sub = await a.cli('submit', scene, '--renderer', 'builtin', '--frames', '1-16', '--width', '960', '--height', '540', '--remote', `beta-${process.pid}`, '--json')
    expect(sub.code, sub.stderr).toBe(0)
    const id = JSON.parse(sub.stdout).id as string
    const job = async (): Promise<any> => JSON.parse((await a.cli('job', id, '--json')).stdout)
    // some frames arrive from the remote site, then it vanishes
    await waitFor(async () => (await job()).frames.some((f: any) => f.state === 'done'), { timeoutMs: 60_000, message: 'a first remote frame' })
    b.proc.kill('SIGKILL')
    const killedAt = Date.now()
    const done = await waitFor(async () => { const j = await job(); return j.state === 'done' ? j : undefined }, { timeoutMs: 120_000, message: 'the job done at the origin' })
    const outputs = (await readdir(join(a.data, 'outputs', id))).filter(n => n.endsWith('.png'))
    expect(outputs).toHaveLength(16)
    expect(new Set(outputs).size).toBe(16)
    const hosts = new Set(done.frames.map((f: any) => f.host))
    const aId = JSON.parse((await a.cli('status', '--json')).stdout).peerId
    expect(hosts.has(aId)).toBe(true) // the origin's own host finished what the remote left
    expect(hosts.size).toBe(2)
    console.log(`remote vanished: job done ${((Date.now() - killedAt) / 1000).toFixed(1)} s after, ${done.frames.filter((f: any) => f.host !== aId).length} frames from the remote, ${done.frames.filter((f: any) => f.host === aId).length} local`)
  })
})
