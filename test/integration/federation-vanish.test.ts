import { afterAll, describe, expect, it } from 'vitest'
import { randomBytes } from 'node:crypto'
import { mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { startLoopbackNode, type LoopbackNode } from './loopback-node.js'
import { waitFor } from '../harness/wait.js'
import { demoScene } from '../../dist/node/renderers/demo-scene.js'

/**
 * Issue 5, faults: the remote site vanishing mid-job, and the origin crashing
 * mid-push. One-node sites on loopback (no multicast); the origin's silence
 * timeout is shortened.
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

  it('goes to another federated site when the origin cannot render it, with only the frames not delivered', async () => {
    dir ??= await mkdtemp(join(tmpdir(), 'farmesh-vanish-'))
    // A has no renderer for the job: what B leaves can only go to C
    const a = await startLoopbackNode(['--site', `alpha2-${process.pid}`, '--slots', '2', '--disable-renderer', 'builtin'], undefined, { FARMESH_REMOTE_TIMEOUT_MS: '4000' })
    const b = await startLoopbackNode(['--site', `beta2-${process.pid}`, '--slots', '2'])
    const c = await startLoopbackNode(['--site', `gamma2-${process.pid}`, '--slots', '2'])
    nodes.push(a, b, c)
    const siteOf = async (n: LoopbackNode): Promise<string | undefined> => JSON.parse((await n.cli('site', '--json')).stdout).siteId ?? undefined
    await waitFor(async () => (await siteOf(a)) != null && (await siteOf(b)) != null && (await siteOf(c)) != null, { timeoutMs: 30_000, message: 'site identities' })
    for (const remote of [b, c]) {
      const token = (await remote.cli('federation', 'invite')).stdout.trim().split('\n').pop() as string
      const joined = await a.cli('federation', 'join', token)
      expect(joined.code, joined.stderr).toBe(0)
    }
    const scene = join(dir, 'scene2.json')
    await writeFile(scene, JSON.stringify(demoScene(16)))
    const sub = await a.cli('submit', scene, '--renderer', 'builtin', '--frames', '1-16', '--width', '960', '--height', '540', '--remote', `beta2-${process.pid}`, '--json')
    expect(sub.code, sub.stderr).toBe(0)
    const id = JSON.parse(sub.stdout).id as string
    const job = async (): Promise<any> => JSON.parse((await a.cli('job', id, '--json')).stdout)
    await waitFor(async () => (await job()).frames.some((f: any) => f.state === 'done'), { timeoutMs: 60_000, message: 'a first frame from B' })
    b.proc.kill('SIGKILL')
    const fromB = new Set((await job()).frames.filter((f: any) => f.state === 'done').map((f: any) => f.frame as number))
    const done = await waitFor(async () => { const j = await job(); return j.state === 'done' ? j : undefined }, { timeoutMs: 120_000, message: 'the job done at the origin' })
    const outputs = (await readdir(join(a.data, 'outputs', id))).filter(n => n.endsWith('.png'))
    expect(outputs).toHaveLength(16)
    const cId = JSON.parse((await c.cli('status', '--json')).stdout).peerId
    const byC = done.frames.filter((f: any) => f.host === cId).map((f: any) => f.frame as number)
    // C was sent only what B had not delivered, and rendered all of it
    for (const f of byC) expect(fromB.has(f), `frame ${f} rendered by B and by C`).toBe(false)
    expect(byC.length).toBe(16 - fromB.size)
    const cJobs = JSON.parse((await c.cli('jobs', '--json')).stdout) as any[]
    expect(cJobs).toHaveLength(1)
    expect(cJobs[0].frames.total).toBe(16 - fromB.size)
    console.log(`remote vanished, job offered to a third site: ${fromB.size}+ frames from B, ${byC.length} from C, C's job had ${cJobs[0].frames.total} frames`)
  })

  it('resumes a push cut off by the origin crashing, from where the receiver stopped, once the origin is back', async () => {
    dir ??= await mkdtemp(join(tmpdir(), 'farmesh-vanish-'))
    const aDir = await mkdtemp(join(tmpdir(), 'farmesh-push-a-'))
    const aArgs = ['--site', `alpha3-${process.pid}`, '--slots', '1', '--disable-renderer', 'command']
    let a = await startLoopbackNode(aArgs, aDir)
    const b = await startLoopbackNode(['--site', `beta3-${process.pid}`, '--slots', '1'])
    nodes.push(b, { ...a, stop: async () => { await a.stop(); await rm(aDir, { recursive: true, force: true }) } })
    const siteOf = async (n: LoopbackNode): Promise<string | undefined> => JSON.parse((await n.cli('site', '--json')).stdout).siteId ?? undefined
    await waitFor(async () => (await siteOf(a)) != null && (await siteOf(b)) != null, { timeoutMs: 30_000, message: 'site identities' })
    const token = (await b.cli('federation', 'invite')).stdout.trim().split('\n').pop() as string
    expect((await a.cli('federation', 'join', token)).code).toBe(0)
    // 256 MiB of inputs: the push lasts seconds, long enough to cut it
    const inputs: string[] = []
    for (let i = 0; i < 16; i++) {
      const f = join(dir, `big-${i}.bin`)
      await writeFile(f, randomBytes(16 * 2 ** 20))
      inputs.push(f)
    }
    const runSh = join(dir, 'run.sh')
    await writeFile(runSh, 'echo "pushed" > "$1"\n')
    void a.cli('submit', runSh, ...inputs, '--renderer', 'command', '--arg', '/bin/sh', '--arg', '{scene}', '--arg', '{output}', '--frames', '1', '--remote', `beta3-${process.pid}`)
    const parts = join(b.data, 'origins', '.intake', 'parts')
    const partSize = async (): Promise<number> => {
      const names = await readdir(parts).catch(() => [] as string[])
      return names.length === 1 ? (await stat(join(parts, names[0]))).size : 0
    }
    await waitFor(async () => (await partSize()) > 16 * 2 ** 20, { timeoutMs: 60_000, intervalMs: 20, message: 'B holding part of the bundle' })
    a.proc.kill('SIGKILL')
    await new Promise(resolve => a.proc.once('exit', resolve))
    const cut = await partSize()
    a = await startLoopbackNode(aArgs, aDir)
    const line = await waitFor(async () => a.log.find(l => /resuming the push of job \S+ to \S+ at byte \d+/.test(l)), { timeoutMs: 30_000, message: 'the push resumed after the restart' })
    const [, id, at] = /resuming the push of job (\S+) to \S+ at byte (\d+)/.exec(line)!
    expect(Number(at)).toBeGreaterThanOrEqual(cut)
    expect(Number(at)).toBeGreaterThan(0)
    const done = await waitFor(async () => { const j = JSON.parse((await a.cli('job', id, '--json')).stdout); return j.state === 'done' ? j : undefined }, { timeoutMs: 120_000, message: 'the job done after the resumed push' })
      .catch((err: Error) => { console.log(`origin log:\n${a.log.slice(-20).join('\n')}\nremote log:\n${b.log.slice(-20).join('\n')}`); throw err })
    expect(done.frames).toHaveLength(1)
    expect(await readdir(join(aDir, 'outputs', id))).toContain('frame_0001.png')
    console.log(`origin killed mid-push with ${(cut / 2 ** 20).toFixed(1)} MiB at B; after its restart the push resumed at byte ${at}`)
  })
})
