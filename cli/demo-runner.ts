import { spawn, type ChildProcess } from 'node:child_process'
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { connectApi, type ApiClient } from './api-client.js'
import { progressLines } from './commands/watch.js'
import { demoScene } from '../node/renderers/demo-scene.js'
import { contactSheet, downscale } from '../node/renderers/contact-sheet.js'
import { encodeAnimatedGif } from '../node/renderers/gif.js'
import { decodePng } from '../node/renderers/png.js'

/**
 * `farmesh demo`: a whole farm on this machine. Three nodes start on
 * loopback (explicit peers: the demo never multicasts on a real network),
 * render a 48-frame animation with the built-in renderer, and the frames, a
 * contact sheet and an animated GIF land in ./farmesh-demo/.
 */
export interface DemoOptions {
  outDir: string
  nodes: number
  frames: number
  slots: number
  print: (line: string) => void
  /** redraw live progress (a terminal) instead of printing a line per change */
  live: boolean
}

const CLI = join(fileURLToPath(import.meta.url), '..', 'main.js')

interface DemoNode { proc: ChildProcess, data: string, api?: ApiClient, log: string[] }

async function waitUntil<T> (what: string, fn: () => Promise<T | undefined>, timeoutMs: number): Promise<T> {
  const end = Date.now() + timeoutMs
  let lastErr: unknown
  while (Date.now() < end) {
    try { const v = await fn(); if (v !== undefined) return v } catch (err) { lastErr = err }
    await new Promise(resolve => setTimeout(resolve, 100))
  }
  throw new Error(`demo: timed out waiting for ${what}${lastErr != null ? ` (${(lastErr as Error).message})` : ''}`)
}

function startNode (data: string, site: string, slots: number, peer?: string): DemoNode {
  const args = [CLI, 'start', '--data', data, '--site', site, '--no-mdns', '--listen', '/ip4/127.0.0.1/tcp/0', '--api', '127.0.0.1:0', '--slots', String(slots)]
  if (peer != null) args.push('--peer', peer)
  const proc = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'pipe'] })
  const node: DemoNode = { proc, data, log: [] }
  proc.stderr?.on('data', (b: Buffer) => { node.log.push(...b.toString().split('\n').filter(Boolean)); node.log.splice(0, Math.max(0, node.log.length - 50)) })
  return node
}

async function ready (node: DemoNode): Promise<ApiClient> {
  return await waitUntil('a node to start', async () => {
    if (node.proc.exitCode != null) throw new Error(`a demo node exited: ${node.log.slice(-3).join(' / ')}`)
    const api = await connectApi(node.data)
    await api.call('GET', '/v1/status')
    node.api = api
    return api
  }, 20_000)
}

async function stopAll (nodes: DemoNode[]): Promise<void> {
  await Promise.all(nodes.map(async n => {
    if (n.proc.exitCode != null || n.proc.signalCode != null) return
    const exited = new Promise(resolve => n.proc.once('exit', resolve))
    n.proc.kill('SIGTERM')
    const t = setTimeout(() => n.proc.kill('SIGKILL'), 5_000)
    await exited
    clearTimeout(t)
  }))
}

export async function runDemo (o: DemoOptions): Promise<{ wallSeconds: number, outDir: string }> {
  const started = Date.now()
  const outDir = resolve(o.outDir)
  const root = await mkdtemp(join(tmpdir(), 'farmesh-demo-'))
  const site = `demo-${process.pid}`
  const nodes: DemoNode[] = []
  const abort = (): void => { for (const n of nodes) n.proc.kill('SIGKILL') }
  process.once('SIGINT', abort)
  try {
    await rm(join(outDir, 'frames'), { recursive: true, force: true })
    await mkdir(join(outDir, 'frames'), { recursive: true })
    o.print(`starting ${o.nodes} nodes on loopback (site ${site})…`)
    nodes.push(startNode(join(root, 'node1'), site, o.slots))
    const first = await ready(nodes[0])
    const status = await first.call('GET', '/v1/status')
    for (let i = 2; i <= o.nodes; i++) nodes.push(startNode(join(root, `node${i}`), site, o.slots, status.addresses[0]))
    await Promise.all(nodes.slice(1).map(ready))
    await waitUntil('every node to see the others', async () => {
      const all = await Promise.all(nodes.map(async n => await n.api!.call<any[]>('GET', '/v1/hosts')))
      return all.every(h => h.length === o.nodes) ? true : undefined
    }, 15_000)
    // the site elects its scheduler a few seconds after its first node starts
    await waitUntil('the site to elect its scheduler', async () => {
      const views = await Promise.all(nodes.map(async n => (await n.api!.call('GET', '/v1/status')).scheduler))
      return views[0] != null && views.every(v => v === views[0]) ? true : undefined
    }, 20_000)
    o.print(`farm up: ${o.nodes} hosts × ${o.slots} slot(s)`)

    const scenePath = join(outDir, 'scene.json')
    await writeFile(scenePath, JSON.stringify(demoScene(o.frames), null, 1))
    const submitter = nodes[nodes.length - 1].api!
    const { id } = await submitter.call('POST', '/v1/jobs', { spec: { name: 'farmesh-demo', frames: `1-${o.frames}`, renderer: 'builtin', scene: scenePath } })
    o.print(`submitted job ${id}: ${o.frames} frames of a built-in animation`)

    let drawn = 0
    let lastDone = -1
    const job = await waitUntil('the job to finish', async () => {
      const j = await submitter.call('GET', `/v1/jobs/${id}`)
      const lines = progressLines(j)
      if (o.live) {
        if (drawn > 0) process.stdout.write(`\x1b[${drawn}A\x1b[J`)
        process.stdout.write(lines.join('\n') + '\n')
        drawn = lines.length
      } else {
        const done = j.frames.filter((f: any) => f.state === 'done').length
        if (done !== lastDone && (done % 8 === 0 || done === j.frames.length)) { o.print(lines[0]); lastDone = done }
      }
      return ['done', 'failed', 'killed'].includes(j.state) ? j : undefined
    }, 10 * 60_000)
    if (job.state !== 'done') throw new Error(`demo job ${job.state}: ${job.reason ?? ''}`)

    await submitter.call('POST', `/v1/jobs/${id}/fetch`, { dir: join(outDir, 'frames') })
    const pngs = (await readdir(join(outDir, 'frames'))).filter(n => n.endsWith('.png')).sort().map(n => join(outDir, 'frames', n))
    if (pngs.length !== o.frames) throw new Error(`demo: expected ${o.frames} frames at the submitter, found ${pngs.length}`)
    await writeFile(join(outDir, 'contact-sheet.png'), contactSheet(pngs, { columns: 8, thumbWidth: 160 }))
    const images = await Promise.all(pngs.map(async p => downscale(decodePng(await readFile(p)), 160, 90)))
    await writeFile(join(outDir, 'preview.gif'), encodeAnimatedGif(images, { delayMs: 80 }))
    const hosts = new Set(job.frames.map((f: any) => f.host))
    const wallSeconds = (Date.now() - started) / 1000
    o.print(`${pngs.length} frames rendered on ${hosts.size} hosts in ${wallSeconds.toFixed(1)} s`)
    o.print(`frames:        ${join(outDir, 'frames')}/`)
    o.print(`contact sheet: ${join(outDir, 'contact-sheet.png')}`)
    o.print(`animation:     ${join(outDir, 'preview.gif')}`)
    return { wallSeconds, outDir }
  } catch (err: any) {
    for (const n of nodes) if (n.log.length > 0 && n.proc.exitCode != null) o.print(`node log: ${n.log.slice(-5).join('\n  ')}`)
    throw err
  } finally {
    o.print('stopping the nodes…')
    await stopAll(nodes)
    process.removeListener('SIGINT', abort)
    await rm(root, { recursive: true, force: true })
  }
}
