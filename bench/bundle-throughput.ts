/**
 * Issue 5 (federation): bundle throughput over loopback. Two one-node sites
 * (A, B) on loopback, federated with `farmesh federation invite` on B and
 * `farmesh federation join TOKEN` on A. A 256 MiB input set (16 random files
 * of 16 MiB, fresh for every repetition so B never already holds them) and a
 * tiny scene are submitted on A with `--remote B`; B renders one `command`
 * frame in its sandbox.
 *
 * The push is timed by A itself (`outsourced.pushMs` and `bundleBytes` from
 * `GET /v1/jobs/:id/billing`): from the first byte packed to B's answer, so
 * it spans reading the inputs, packing, sealing, the wire, and B's whole
 * intake (decrypt, verify, unpack, store) — the push is one stream, B unpacks
 * while it arrives, and A waits for B's "accepted". Figures: MiB/s of that
 * span, and of submit → reply (which adds A's own copy of the inputs into its
 * blob store at submit).
 *
 * Against: `scp -r` (OpenSSH) of the same input directory in the same
 * repetition, to a throwaway sshd on 127.0.0.1 (own host key, own config,
 * fresh ed25519 client key). Ratio = farmesh push MiB/s ÷ scp MiB/s, target
 * ≥ 1.0 (medians).
 *
 * Memory: VmRSS of both node processes every 100 ms from submit to the end
 * of the push, over an idle baseline taken just before submit; target flat,
 * ≤ 64 MiB over idle.
 */
import { execFileSync, spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { chmodSync, existsSync, mkdirSync, writeFileSync } from 'node:fs'
import { createServer, connect } from 'node:net'
import { join } from 'node:path'
import {
  api, CLI, cleanEnv, maxOf, median, MiB, procMem, removeTempDir, REPO_ROOT, sleep, spawnTracked, startLocalNode, stopAll, stopTracked, tempDir, waitApi, waitFor,
  type Bench, type BenchOptions, type BenchResult, type Figure, type LocalNode, type Tracked
} from './common.js'

const FILES = 16
const FILE_SIZE = 16 * MiB
const MEM_TARGET = 64 * MiB

/** Run the CLI against a node's data dir; resolves with stdout (rejects on a non-zero exit). */
async function cli (data: string, args: string[], timeoutMs = 600_000): Promise<{ stdout: string, ms: number }> {
  const t0 = Date.now()
  return await new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [CLI, ...args, '--data', data], { cwd: REPO_ROOT, env: cleanEnv(), stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    let err = ''
    p.stdout.on('data', (b: Buffer) => { out += b.toString() })
    p.stderr.on('data', (b: Buffer) => { err += b.toString() })
    const timer = setTimeout(() => { p.kill('SIGKILL') }, timeoutMs)
    p.once('error', reject)
    p.once('exit', (code) => {
      clearTimeout(timer)
      if (code === 0) resolve({ stdout: out, ms: Date.now() - t0 })
      else reject(new Error(`farmesh ${args.join(' ')}: exit ${code}: ${(err || out).trim().split('\n').slice(-3).join(' / ')}`))
    })
  })
}

async function freePort (): Promise<number> {
  return await new Promise((resolve, reject) => {
    const s = createServer()
    s.once('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as any).port as number
      s.close(() => { resolve(port) })
    })
  })
}

async function portOpen (port: number): Promise<boolean> {
  return await new Promise(resolve => {
    const c = connect(port, '127.0.0.1')
    c.once('connect', () => { c.destroy(); resolve(true) })
    c.once('error', () => { resolve(false) })
  })
}

interface Sshd { proc: Tracked, port: number, key: string, dir: string }

/** A throwaway sshd on 127.0.0.1: own host key, config, authorized key; root login by key only. */
async function startSshd (): Promise<Sshd> {
  if (!existsSync('/usr/sbin/sshd') || !existsSync('/usr/bin/scp')) throw new Error('OpenSSH server/client not installed (apt-get install -y openssh-server openssh-client)')
  const dir = tempDir('sshd')
  chmodSync(dir, 0o700)
  const hostKey = join(dir, 'host_ed25519')
  const key = join(dir, 'client_ed25519')
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', hostKey])
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', key])
  execFileSync('cp', [`${key}.pub`, join(dir, 'authorized_keys')])
  mkdirSync('/run/sshd', { recursive: true, mode: 0o755 }) // privilege separation directory sshd insists on
  const port = await freePort()
  const cfg = join(dir, 'sshd_config')
  writeFileSync(cfg, [
    `Port ${port}`, 'ListenAddress 127.0.0.1', `HostKey ${hostKey}`, 'PermitRootLogin yes', `AuthorizedKeysFile ${join(dir, 'authorized_keys')}`,
    'PasswordAuthentication no', 'KbdInteractiveAuthentication no', 'StrictModes no', 'UsePAM no', `PidFile ${join(dir, 'sshd.pid')}`,
    'Subsystem sftp internal-sftp', ''
  ].join('\n'))
  const proc = spawnTracked('/usr/sbin/sshd', ['-f', cfg, '-D', '-e'])
  await waitFor('sshd to listen', async () => { if (!proc.running()) throw new Error(`sshd exited: ${proc.tail.slice(-3).join(' / ')}`); return await portOpen(port) }, 10_000)
  return { proc, port, key, dir }
}

async function scpDir (sshd: Sshd, src: string, dest: string): Promise<number> {
  const t0 = process.hrtime.bigint()
  await new Promise<void>((resolve, reject) => {
    const p = spawn('scp', ['-q', '-P', String(sshd.port), '-i', sshd.key, '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'BatchMode=yes', '-r', src, `root@127.0.0.1:${dest}`], { stdio: ['ignore', 'ignore', 'pipe'] })
    let err = ''
    p.stderr.on('data', (b: Buffer) => { err += b.toString() })
    p.once('error', reject)
    p.once('exit', code => { code === 0 ? resolve() : reject(new Error(`scp: exit ${code}: ${err.trim()}`)) })
  })
  return Number(process.hrtime.bigint() - t0) / 1e6
}

function makeInputs (dir: string): { scene: string, files: string[], bytes: number } {
  const scene = join(dir, 'scene.txt')
  writeFileSync(scene, 'bench scene\n')
  const files: string[] = []
  for (let i = 0; i < FILES; i++) {
    const f = join(dir, `input-${String(i).padStart(2, '0')}.bin`)
    writeFileSync(f, randomBytes(FILE_SIZE))
    files.push(f)
  }
  return { scene, files, bytes: FILES * FILE_SIZE + 12 }
}

/** VmRSS samples of some pids every `everyMs` until stopped. */
function memSampler (pids: number[], everyMs = 100): { stop: () => Promise<number[][]> } {
  const samples: number[][] = pids.map(() => [])
  let on = true
  const loop = (async () => {
    while (on) {
      await Promise.all(pids.map(async (pid, i) => { try { samples[i].push((await procMem(pid)).rss) } catch {} }))
      await sleep(everyMs)
    }
  })()
  return { stop: async () => { on = false; await loop; return samples } }
}

interface Rep { bytes: number, pushMs: number, submitMs: number, scpMs: number | null, scpBytes: number, idle: [number, number], peak: [number, number], after: [number, number], rendered: string }

export const bundleThroughput: Bench = {
  name: 'bundle-throughput',
  aliases: ['bundle', 'federation'],
  title: 'bundle-throughput: 256 MiB job push A → B over loopback vs scp (issue 5)',
  async run (o: BenchOptions): Promise<BenchResult> {
    const reps = o.quick ? 1 : 3
    const notes: string[] = []
    const nodes: LocalNode[] = []
    let sshd: Sshd | undefined
    const tag = `${process.pid}-${Math.random().toString(36).slice(2, 6)}`
    const siteA = `bench-a-${tag}`
    const siteB = `bench-b-${tag}`
    const results: Rep[] = []
    try {
      // verbose: A's push log lines (and the reasons of resumed pushes) end up in the tail
      const a = startLocalNode({ site: siteA, slots: 1, verbose: true })
      const b = startLocalNode({ site: siteB, slots: 1, verbose: true })
      nodes.push(a, b)
      const [ia, ib] = await Promise.all([waitApi(a), waitApi(b)])
      // the elected scheduler creates the site identity a few seconds after start
      await waitFor('both sites to have an id', async () => {
        const ids = await Promise.all([ia, ib].map(async i => (await api(i, 'GET', '/v1/site')).siteId as string | null))
        return ids.every(id => id != null)
      }, 30_000, 200)
      const invite = await cli(b.data, ['federation', 'invite'])
      const token = invite.stdout.trim().split('\n').pop() ?? ''
      await cli(a.data, ['federation', 'join', token])
      await waitFor('A and B federated (active on both)', async () => {
        const [la, lb] = await Promise.all([ia, ib].map(async i => await api<any[]>(i, 'GET', '/v1/federation')))
        return la.some(s => s.name === siteB && s.state === 'active') && lb.some(s => s.name === siteA && s.state === 'active')
      }, 30_000, 200)
      o.log(`  sites ${siteA} (A) and ${siteB} (B) federated on loopback`)
      sshd = await startSshd()
      o.log(`  throwaway sshd on 127.0.0.1:${sshd.port}`)

      for (let rep = 0; rep < reps; rep++) {
        const inDir = tempDir('bundle-in')
        const { scene, files, bytes: inputBytes } = makeInputs(inDir)
        await sleep(1_000)
        // idle baseline: 1 s of samples before submit
        const idleSampler = memSampler([ia.pid, ib.pid])
        await sleep(1_000)
        const idleSamples = await idleSampler.stop()
        const idle: [number, number] = [median(idleSamples[0]) ?? NaN, median(idleSamples[1]) ?? NaN]
        const mem = memSampler([ia.pid, ib.pid])
        const t0 = Number(process.hrtime.bigint()) / 1e6
        const cmd = [process.execPath, '-e', "require('fs').writeFileSync(process.argv[1],'x')", '{output}']
        const sub = await cli(a.data, ['submit', scene, ...files, '--renderer', 'command', ...cmd.map(x => `--arg=${x}`), '--frames', '1', '--remote', siteB])
        const tEnd = Number(process.hrtime.bigint()) / 1e6
        const samples = await mem.stop()
        const jobId = sub.stdout.trim().split('\n').pop() ?? ''
        const bill = await api(ia, 'GET', `/v1/jobs/${jobId}/billing`)
        const bytes = Number(bill.outsourced?.bundleBytes ?? NaN)
        const pushMs = Number(bill.outsourced?.pushMs ?? NaN)
        const wire = Number(bill.outsourced?.bytesSent ?? NaN)
        const pushed = bytes > 0 && pushMs > 0 && bill.outsourced?.remoteJobId != null
        if (!pushed) notes.push(`rep ${rep + 1}: push of job ${jobId} did not complete; submit took ${(tEnd - t0).toFixed(0)} ms; billing ${JSON.stringify(bill.outsourced ?? null)}; A: ${a.tail.slice(-6).join(' / ')}; B: ${b.tail.slice(-6).join(' / ')}`)
        if (pushed && wire !== bytes) {
          const why = [...a.tail, ...b.tail].filter(l => /interrupted|stopped at|incomplete|refused/.test(l)).slice(-4)
          notes.push(`rep ${rep + 1}: ${wire} bytes on the wire for a ${bytes}-byte bundle (a push resumed: ${why.join(' / ') || 'no reason logged'})`)
        }
        if (!pushed) o.log(`  ${notes[notes.length - 1]}`)
        const after: [number, number] = [(await procMem(ia.pid)).rss, (await procMem(ib.pid)).rss]
        // the frame on B, so the next repetition starts from quiet nodes
        let rendered = 'not finished within 60 s'
        try {
          rendered = await waitFor('the remote job to finish', async () => {
            const bl = await api(ia, 'GET', `/v1/jobs/${jobId}/billing`)
            return bl.billing != null ? String(bl.billing.state) : undefined
          }, 60_000, 250)
        } catch {}
        const scpDest = tempDir('scp-dest')
        let scpMs: number | null = null
        try { scpMs = await scpDir(sshd, inDir, join(scpDest, 'in')) } catch (err: any) { notes.push(`scp failed: ${err.message}`) }
        removeTempDir(scpDest)
        removeTempDir(inDir)
        const r: Rep = {
          bytes: pushed ? bytes : NaN, pushMs: pushed ? pushMs : NaN, submitMs: tEnd - t0, scpMs, scpBytes: inputBytes,
          idle, peak: [maxOf(samples[0]) ?? NaN, maxOf(samples[1]) ?? NaN], after, rendered
        }
        results.push(r)
        const mibs = (n: number, ms: number): string => (n / MiB / (ms / 1000)).toFixed(0)
        o.log(`  rep ${rep + 1}: job ${jobId} bundle ${(bytes / MiB).toFixed(1)} MiB; push ${r.pushMs.toFixed(0)} ms (${mibs(bytes, r.pushMs)} MiB/s), submit→reply ${r.submitMs.toFixed(0)} ms; scp ${scpMs != null ? `${scpMs.toFixed(0)} ms (${mibs(inputBytes, scpMs)} MiB/s)` : 'failed'}; RSS A ${(idle[0] / MiB).toFixed(0)} → peak ${(r.peak[0] / MiB).toFixed(0)} MiB, B ${(idle[1] / MiB).toFixed(0)} → peak ${(r.peak[1] / MiB).toFixed(0)} MiB; remote job ${rendered}`)
      }
    } finally {
      if (sshd != null) { await stopTracked(sshd.proc, 2_000); removeTempDir(sshd.dir) }
      await stopAll(nodes)
      for (const n of nodes) removeTempDir(n.data)
    }

    const rate = (n: number, ms: number): number => n / MiB / (ms / 1000)
    const ok = results.filter(r => Number.isFinite(r.bytes))
    const push = median(ok.map(r => rate(r.bytes, r.pushMs))) ?? null
    const submit = median(ok.map(r => rate(r.bytes, r.submitMs))) ?? null
    const scps = results.filter(r => r.scpMs != null).map(r => rate(r.scpBytes, r.scpMs as number))
    const scp = median(scps) ?? null
    const overA = maxOf(results.map(r => r.peak[0] - r.idle[0]))
    const overB = maxOf(results.map(r => r.peak[1] - r.idle[1]))
    // the idle baseline can creep up between repetitions: peak over the first one shows that
    const driftA = results.length > 0 ? (maxOf(results.map(r => r.peak[0])) ?? NaN) - results[0].idle[0] : null
    const driftB = results.length > 0 ? (maxOf(results.map(r => r.peak[1])) ?? NaN) - results[0].idle[1] : null
    const afterA = maxOf(results.map(r => r.after[0] - r.idle[0]))
    const afterB = maxOf(results.map(r => r.after[1] - r.idle[1]))
    const mibOrNull = (v: number | null): number | null => v == null ? null : v / MiB
    const figures: Figure[] = [
      { label: 'push / scp ratio (MiB/s ÷ MiB/s)', value: push != null && scp != null ? push / scp : null, unit: '×', target: { op: '>=', value: 1.0 }, headline: true, digits: 2 },
      { label: 'farmesh push A → B (first byte packed → B accepted)', value: push, unit: 'MiB/s', digits: 0 },
      { label: 'farmesh submit → reply (+ A storing the inputs)', value: submit, unit: 'MiB/s', digits: 0 },
      { label: 'submit → reply / scp ratio', value: submit != null && scp != null ? submit / scp : null, unit: '×', digits: 2 },
      { label: 'scp -r of the same files', value: scp, unit: 'MiB/s', digits: 0 },
      { label: 'node A (sender) VmRSS peak over idle', value: mibOrNull(overA), unit: 'MiB', target: { op: '<=', value: MEM_TARGET / MiB }, headline: true, digits: 1 },
      { label: 'node B (receiver) VmRSS peak over idle', value: mibOrNull(overB), unit: 'MiB', target: { op: '<=', value: MEM_TARGET / MiB }, headline: true, digits: 1 },
      { label: 'node A VmRSS peak over the first idle', value: mibOrNull(driftA), unit: 'MiB', digits: 1 },
      { label: 'node B VmRSS peak over the first idle', value: mibOrNull(driftB), unit: 'MiB', digits: 1 },
      { label: 'node A VmRSS right after the push, over idle', value: mibOrNull(afterA), unit: 'MiB', digits: 1 },
      { label: 'node B VmRSS right after the push, over idle', value: mibOrNull(afterB), unit: 'MiB', digits: 1 }
    ]
    notes.push(`${results.length} repetition(s), medians; input set ${FILES} × ${FILE_SIZE / MiB} MiB random files + a tiny scene, fresh each repetition; MiB/s = bundle bytes (billing outsourced.bundleBytes) / time; scp MiB/s = input bytes / wall time of scp -r`)
    notes.push(`push time: A's own record (outsourced.pushMs: first byte packed → B accepted, B's intake included); VmRSS sampled every 100 ms from submit to the reply, idle = median of 1 s before submit; ratio target ≥ 1.0 against scp; remote jobs: ${results.map(r => r.rendered).join(', ')}`)
    return { name: this.name, title: this.title, figures, notes }
  }
}
