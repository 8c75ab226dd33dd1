/**
 * Issue 2: how long a new host takes to join a site. A 4-host site runs;
 * a 5th host is started 10 times (fresh data directory, so a new peer id
 * every time) and stopped again. Join time = spawning `farmesh start` →
 * the new host listed by GET /v1/hosts of an existing node (polled every
 * 20 ms). Target: ≤ 2 s.
 *
 * Preferred: a LAN of network namespaces with mDNS (the zero-config path).
 * Without root/iproute2 it falls back to loopback with --peer and says so.
 */
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import {
  api, BENCH_DIST, CLI, maxOf, median, quantile, readApiInfo, removeTempDir, sleep, startLocalNode, stopAll, stopTracked, tempDir, waitApi,
  type Bench, type BenchOptions, type BenchResult, type Figure, type LocalNode, type Tracked
} from './common.js'
import { createLiteLan, netnsSupported, type LiteLan } from './netns-lite.js'

const POLL_MS = 20
const BASE_HOSTS = 4
const TARGET_MS = 2_000
const JOIN_TIMEOUT_MS = 20_000

interface TableEvent { t: number, ids?: string[], error?: string }

/** The observed states of one node's table, with a way to wait for one. */
class TableWatch {
  readonly events: TableEvent[] = []
  private readonly waiters = new Set<() => void>()

  push (e: TableEvent): void {
    this.events.push(e)
    for (const w of this.waiters) w()
  }

  /** First time at or after `since` whose ids satisfy pred (the state current at `since` counts). */
  find (pred: (ids: string[]) => boolean, since: number): number | undefined {
    let i = 0
    let current: TableEvent | undefined
    for (; i < this.events.length && this.events[i].t <= since; i++) current = this.events[i]
    if (current?.ids != null && pred(current.ids)) return since
    for (; i < this.events.length; i++) {
      const ids = this.events[i].ids
      if (ids != null && pred(ids)) return this.events[i].t
    }
    return undefined
  }

  async until (pred: (ids: string[]) => boolean, since: number, timeoutMs: number): Promise<number | undefined> {
    const hit = this.find(pred, since)
    if (hit != null) return hit
    return await new Promise(resolve => {
      const check = (): void => {
        const t = this.find(pred, since)
        if (t != null) { done(); resolve(t) }
      }
      const timer = setTimeout(() => { done(); resolve(undefined) }, timeoutMs)
      const done = (): void => { clearTimeout(timer); this.waiters.delete(check) }
      this.waiters.add(check)
    })
  }

  get ids (): string[] | undefined {
    for (let i = this.events.length - 1; i >= 0; i--) {
      if (this.events[i].ids != null) return this.events[i].ids
      if (this.events[i].error != null) return undefined
    }
    return undefined
  }
}

/** Watch from a poller process (inside a namespace). */
function watchProcess (t: Tracked): TableWatch {
  const w = new TableWatch()
  let buf = ''
  t.proc.stdout?.setEncoding('utf8').on('data', (d: string) => {
    buf += d
    let nl: number
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl)
      buf = buf.slice(nl + 1)
      try { w.push(JSON.parse(line) as TableEvent) } catch {}
    }
  })
  return w
}

/** Watch in-process (loopback: the API is reachable from here). */
function watchLocal (data: string): { watch: TableWatch, stop: () => void } {
  const w = new TableWatch()
  let stopped = false
  let last = ''
  void (async () => {
    const start = Date.now()
    let tick = 0
    let info: { url: string, token: string } | undefined
    while (!stopped) {
      let e: Omit<TableEvent, 't'>
      try {
        info ??= await readApiInfo(data)
        e = { ids: (await api<Array<{ id: string }>>(info, 'GET', '/v1/hosts', undefined, 2_000)).map(h => h.id).sort() }
      } catch (err: any) { info = undefined; e = { error: String(err.message) } }
      const key = JSON.stringify(e)
      if (key !== last) { last = key; w.push({ t: Date.now(), ...e }) }
      tick = Math.max(tick + 1, Math.floor((Date.now() - start) / POLL_MS) + 1)
      await sleep(Math.max(0, start + tick * POLL_MS - Date.now()))
    }
  })()
  return { watch: w, stop: () => { stopped = true } }
}

interface Sample { joinFirst: number | null, joinAll: number | null, apiWritten: number | null, leaveAll: number | null }

export const joinTime: Bench = {
  name: 'join-time',
  aliases: ['join'],
  title: 'join-time: spawn of a new host → listed by the site (issue 2)',
  async run (o: BenchOptions): Promise<BenchResult> {
    const iterations = o.quick ? 5 : 10
    const useNetns = netnsSupported() && process.env.FARMESH_BENCH_LOOPBACK == null
    const site = `bench-join-${process.pid}`
    const notes: string[] = []
    const base: Tracked[] = []
    const pollers: Tracked[] = []
    const localStops: Array<() => void> = []
    let lan: LiteLan | undefined
    const watches: TableWatch[] = []
    let spawnNew: (data: string) => Tracked
    const samples: Sample[] = []

    try {
      if (useNetns) {
        o.log(`building a ${BASE_HOSTS + 1}-host namespace LAN (bridge, mDNS on eth0)…`)
        lan = await createLiteLan(BASE_HOSTS + 1)
        const nodeArgs = (data: string, ip: string): string[] => [CLI, 'start', '--data', data, '--site', site, '--mdns-interface', 'eth0', '--listen', `/ip4/${ip}/tcp/0`, '--api', '127.0.0.1:0', '--slots', '1', '--quiet']
        for (const h of lan.hosts.slice(0, BASE_HOSTS)) {
          const data = tempDir('join')
          base.push(h.spawn(process.execPath, nodeArgs(data, h.ip)))
          const p = h.spawn(process.execPath, [join(BENCH_DIST, 'hosts-poller.js'), data, String(POLL_MS)])
          pollers.push(p)
          watches.push(watchProcess(p))
        }
        const newHost = lan.hosts[BASE_HOSTS]
        spawnNew = (data) => newHost.spawn(process.execPath, nodeArgs(data, newHost.ip))
        notes.push(`network namespaces: ${BASE_HOSTS + 1}-host bridge LAN, discovery by mDNS only (no --peer); pollers run inside each host's namespace`)
      } else {
        o.log('network namespaces unavailable (needs root + iproute2): loopback with --peer')
        const first = startLocalNode({ site, slots: 1 })
        base.push(first)
        const info = await waitApi(first)
        const status = await api(info, 'GET', '/v1/status')
        const addr = (status.addresses as string[]).find(a => a.startsWith('/ip4/127.0.0.1/')) ?? status.addresses[0]
        for (let i = 1; i < BASE_HOSTS; i++) base.push(startLocalNode({ site, slots: 1, peers: [addr] }))
        for (const n of base as LocalNode[]) {
          const w = watchLocal(n.data)
          watches.push(w.watch)
          localStops.push(w.stop)
        }
        spawnNew = (data) => startLocalNode({ site, slots: 1, peers: [addr], data })
        notes.push('LOOPBACK fallback (no network namespaces here): hosts joined by --peer, not mDNS')
      }

      // the site is up when every table lists all base hosts
      const upSince = Date.now()
      const up = await Promise.all(watches.map(async w => await w.until(ids => ids.length === BASE_HOSTS, upSince - 60_000, 60_000)))
      if (up.some(t => t == null)) throw new Error(`the ${BASE_HOSTS}-host site did not form within 60 s: ${base.map(b => b.tail.slice(-2).join(' / ')).join(' | ')}`)
      const baseIds = new Set(watches[0].ids ?? [])
      o.log(`site of ${BASE_HOSTS} up; adding and removing a ${BASE_HOSTS + 1}th host ${iterations} times`)
      await sleep(2_000)

      for (let i = 0; i < iterations; i++) {
        const data = tempDir('join-new')
        const isNew = (ids: string[]): boolean => ids.length === BASE_HOSTS + 1 && ids.some(id => !baseIds.has(id))
        const t0 = Date.now()
        const node = spawnNew(data)
        // node startup alone: when api.json appears (the node writes it once its API listens)
        let apiWritten: number | null = null
        const fileWatch = (async () => {
          while (apiWritten == null && Date.now() - t0 < JOIN_TIMEOUT_MS && node.running()) {
            if (existsSync(join(data, 'api.json'))) apiWritten = Date.now() - t0
            else await sleep(5)
          }
        })()
        const [first, ...others] = await Promise.all(watches.map(async w => await w.until(isNew, t0, JOIN_TIMEOUT_MS)))
        await fileWatch
        const all = [first, ...others]
        const joinFirst = first != null ? first - t0 : null
        const joinAll = all.every(t => t != null) ? Math.max(...all.map(t => t as number)) - t0 : null
        if (joinFirst == null) notes.push(`iteration ${i + 1}: not listed within ${JOIN_TIMEOUT_MS / 1000} s (${node.tail.slice(-3).join(' / ')})`)

        await sleep(300)
        const tStop = Date.now()
        const stopping = stopTracked(node)
        const gone = await Promise.all(watches.map(async w => await w.until(ids => ids.length === BASE_HOSTS && ids.every(id => baseIds.has(id)), tStop, 15_000)))
        await stopping
        const leaveAll = gone.every(t => t != null) ? Math.max(...gone.map(t => t as number)) - tStop : null
        samples.push({ joinFirst, joinAll, apiWritten, leaveAll })
        o.log(`  #${i + 1}: listed after ${joinFirst ?? 'n/a'} ms (by all ${BASE_HOSTS}: ${joinAll ?? 'n/a'} ms; its API up after ${apiWritten ?? 'n/a'} ms); gone from all tables ${leaveAll ?? 'n/a'} ms after SIGTERM`)
        removeTempDir(data)
        await sleep(500)
      }
    } finally {
      for (const s of localStops) s()
      await stopAll([...pollers, ...base])
      await lan?.destroy()
    }

    const vals = (k: keyof Sample): number[] => samples.map(s => s[k]).filter((v): v is number => v != null)
    const missed = samples.filter(s => s.joinFirst == null).length
    const firsts = vals('joinFirst')
    // a host never listed counts as infinitely slow for the max
    const figures: Figure[] = [
      { label: `join time, median of ${samples.length}`, value: missed > samples.length / 2 ? null : median(firsts), unit: 'ms', target: { op: '<=', value: TARGET_MS }, headline: true, digits: 0 },
      { label: `join time, max of ${samples.length}`, value: missed > 0 ? null : maxOf(firsts), unit: 'ms', target: { op: '<=', value: TARGET_MS }, digits: 0 },
      { label: `listed by all ${BASE_HOSTS} hosts, median`, value: median(vals('joinAll')), unit: 'ms', digits: 0 },
      { label: `listed by all ${BASE_HOSTS} hosts, max`, value: maxOf(vals('joinAll')), unit: 'ms', digits: 0 },
      { label: 'of which node startup (API up), median', value: median(vals('apiWritten')), unit: 'ms', digits: 0 },
      { label: 'leave after SIGTERM, all tables, median', value: median(vals('leaveAll')), unit: 'ms', digits: 0 },
      { label: 'leave after SIGTERM, all tables, p90', value: quantile(vals('leaveAll'), 0.9), unit: 'ms', digits: 0 }
    ]
    notes.push(`table polled every ${POLL_MS} ms: figures include up to ${POLL_MS} ms of polling delay`)
    if (missed > 0) notes.push(`${missed} of ${samples.length} joins did not complete within ${JOIN_TIMEOUT_MS / 1000} s`)
    return { name: this.name, title: this.title + (useNetns ? ' [netns + mDNS]' : ' [LOOPBACK + --peer]'), figures, notes }
  }
}
