/**
 * A minimal copy of test/harness/netns.ts for benchmarks (that one is test
 * code, not compiled into dist/): one bridge LAN of N hosts, each host a
 * network namespace with `eth0` on the bridge and a multicast route, so mDNS
 * works between hosts and never leaves the LAN. Nothing is added to the root
 * namespace.
 *
 *   netns fmb<pid>-<n>-sw   bridge br0 (multicast snooping off), ports h1..hN
 *   netns fmb<pid>-<n>-hI   lo, eth0 = 10.X.Y.I/24, route 224.0.0.0/4 dev eth0
 *
 * Processes spawned in a host get their own process group and are killed on
 * destroy; namespaces are deleted on destroy, on exit and on SIGINT/SIGTERM
 * (see common.ts), and namespaces left by a crashed earlier run (dead pid in
 * the name) are reaped before a new LAN is built.
 */
import { execFile, execFileSync } from 'node:child_process'
import { promisify } from 'node:util'
import { cleanEnv, groupAlive, installCleanupHooks, offCleanup, onCleanup, sleep, spawnTracked, type Tracked } from './common.js'

const execFileAsync = promisify(execFile)
const PREFIX = 'fmb'

async function ip (args: string[]): Promise<string> {
  try {
    const { stdout } = await execFileAsync('ip', args, { encoding: 'utf8' })
    return stdout
  } catch (err: any) {
    throw new Error(`ip ${args.join(' ')} failed: ${String(err.stderr ?? err.message).trim()}`)
  }
}

function pidAlive (pid: number): boolean {
  try { process.kill(pid, 0); return true } catch (err: any) { return err.code === 'EPERM' }
}

function nsPidsSync (ns: string): number[] {
  try {
    return execFileSync('ip', ['netns', 'pids', ns], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).split(/\s+/).filter(Boolean).map(Number)
  } catch { return [] }
}

function deleteNamespaceSync (ns: string): void {
  for (const pid of nsPidsSync(ns)) { try { process.kill(pid, 'SIGKILL') } catch {} }
  try { execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore' }) } catch {}
}

async function deleteNamespace (ns: string): Promise<void> {
  for (let i = 0; i < 40; i++) {
    const pids = (await ip(['netns', 'pids', ns]).catch(() => '')).split(/\s+/).filter(Boolean).map(Number)
    if (pids.length === 0) break
    for (const pid of pids) { try { process.kill(pid, 'SIGKILL') } catch {} }
    await sleep(50)
  }
  await ip(['netns', 'del', ns]).catch(() => undefined)
}

/** True when this process can build namespaces (root, iproute2, unshare). */
export function netnsSupported (): boolean {
  if (process.getuid?.() !== 0) return false
  try {
    execFileSync('ip', ['netns', 'list'], { stdio: 'ignore' })
    execFileSync('unshare', ['--version'], { stdio: 'ignore' })
    return true
  } catch { return false }
}

/** Deletes namespaces of earlier benchmark runs whose process is gone. */
export async function reapStale (): Promise<string[]> {
  const names = (await ip(['netns', 'list'])).split('\n').map(l => l.trim().split(/\s+/)[0] ?? '').filter(Boolean)
  const re = new RegExp(`^${PREFIX}(\\d+)-`)
  const stale = names.filter(n => {
    const pid = Number(re.exec(n)?.[1] ?? NaN)
    return Number.isInteger(pid) && pid !== process.pid && !pidAlive(pid)
  })
  stale.sort((a, b) => Number(a.endsWith('-sw')) - Number(b.endsWith('-sw')))
  for (const ns of stale) await deleteNamespace(ns)
  return stale
}

export interface LiteHost {
  ns: string
  ip: string
  hostname: string
  /** a tracked process inside this host (own process group, own UTS namespace with the host's name) */
  spawn: (cmd: string, args: string[]) => Tracked
}

export interface LiteLan {
  id: string
  hosts: LiteHost[]
  destroy: () => Promise<void>
}

let counter = 0

/** Picks a 10.X.Y.0/24 that no route of the root namespace overlaps (not needed for isolation, just tidy). */
async function pickSubnet (): Promise<string> {
  const routes = await ip(['-4', 'route', 'show', 'table', 'all']).catch(() => '')
  for (let i = 0; i < 256; i++) {
    const prefix = `10.${200 + ((process.pid + i) % 50)}.${(process.pid * 7 + counter * 13 + i) % 256}`
    if (!routes.includes(`${prefix}.`)) return prefix
  }
  return '10.254.254'
}

export async function createLiteLan (count: number): Promise<LiteLan> {
  installCleanupHooks()
  await reapStale().catch(() => [])
  const id = `${PREFIX}${process.pid}-${++counter}`
  const sw = `${id}-sw`
  const prefix = await pickSubnet()
  const namespaces: string[] = []
  const procs = new Set<Tracked>()
  const cleanupKey = `netns:${id}`
  onCleanup(cleanupKey, () => { for (const ns of [...namespaces].reverse()) deleteNamespaceSync(ns) })

  const addNs = async (ns: string): Promise<void> => {
    await ip(['netns', 'add', ns])
    namespaces.push(ns)
    await ip(['-n', ns, 'link', 'set', 'lo', 'up'])
  }

  const destroy = async (): Promise<void> => {
    // clean stop first (nodes leave their site), then whatever is left
    for (const t of procs) { try { process.kill(t.pid, 'SIGTERM') } catch {} }
    const end = Date.now() + 3_000
    while ([...procs].some(t => groupAlive(t.pid)) && Date.now() < end) await sleep(50)
    for (const t of procs) { try { process.kill(-t.pid, 'SIGKILL') } catch {} }
    for (const ns of [...namespaces].reverse()) await deleteNamespace(ns)
    namespaces.length = 0
    offCleanup(cleanupKey)
  }

  try {
    await addNs(sw)
    await ip(['-n', sw, 'link', 'add', 'br0', 'type', 'bridge'])
    // a dumb switch: flood multicast instead of relying on IGMP snooping
    await ip(['-n', sw, 'link', 'set', 'br0', 'type', 'bridge', 'mcast_snooping', '0'])
    await ip(['-n', sw, 'link', 'set', 'br0', 'up'])
    const hosts: LiteHost[] = []
    for (let i = 1; i <= count; i++) {
      const ns = `${id}-h${i}`
      const addr = `${prefix}.${i}`
      await addNs(ns)
      await ip(['-n', sw, 'link', 'add', `h${i}`, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns])
      await ip(['-n', sw, 'link', 'set', `h${i}`, 'master', 'br0', 'up'])
      await ip(['-n', ns, 'addr', 'add', `${addr}/24`, 'dev', 'eth0'])
      await ip(['-n', ns, 'link', 'set', 'eth0', 'up'])
      await ip(['-n', ns, 'route', 'add', '224.0.0.0/4', 'dev', 'eth0'])
      const hostname = `bench-h${i}`
      hosts.push({
        ns,
        ip: addr,
        hostname,
        spawn: (cmd, args) => {
          // `ip netns exec`, `unshare` and `sh -c exec` all exec in place: the pid is the command's
          const t = spawnTracked('ip', ['netns', 'exec', ns, 'unshare', '--uts', 'sh', '-c', 'hostname "$1" && shift && exec "$@"', 'sh', hostname, cmd, ...args], { env: cleanEnv(), stdio: ['pipe', 'pipe', 'pipe'] })
          procs.add(t)
          void t.exited.then(() => { if (!groupAlive(t.pid)) procs.delete(t) })
          return t
        }
      })
    }
    return { id, hosts, destroy }
  } catch (err) {
    await destroy()
    throw err
  }
}

