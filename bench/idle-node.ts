/**
 * Issue 2: what an idle node costs its host. A 3-node site on loopback
 * (--no-mdns, --peer), nothing submitted; after the site settled, each
 * node's /proc is read at the start and end of a 60 s window (10 s with
 * --quick): CPU = Δ(utime+stime) over the window (target < 1 % of a core),
 * resident memory = VmRSS at the end (target ≤ 120 MB). Nothing talks to
 * the nodes during the window.
 *
 * Children the node reaped during the window (the renderer probes that
 * re-run `blender --version` / `povray --version` every 30 s) show in
 * cutime+cstime, reported separately: they are the node's doing, but not
 * its own process's CPU.
 */
import { readFile } from 'node:fs/promises'
import { CLK_TCK, MB, maxOf, procCpu, procMem, sleep, startLocalSite, stopAll, type Bench, type BenchOptions, type BenchResult, type Figure } from './common.js'

const CPU_TARGET_PCT = 1
const RSS_TARGET_MB = 120

export const idleNode: Bench = {
  name: 'idle-node',
  aliases: ['idle'],
  title: 'idle-node: CPU and memory of an idle node in a 3-node site (issue 2)',
  async run (o: BenchOptions): Promise<BenchResult> {
    const windowMs = o.quick ? 10_000 : 60_000
    const settleMs = o.quick ? 3_000 : 5_000
    const { nodes } = await startLocalSite({ count: 3, slots: 2, log: o.log })
    const notes: string[] = []
    const per: Array<{ cpuPct: number, childPct: number, rssMB: number, hwmMB: number, rssMaxMB: number, writesPerS: number }> = []
    const syscw = async (pid: number): Promise<number> => Number(/^syscw:\s*(\d+)/m.exec(await readFile(`/proc/${pid}/io`, 'utf8').catch(() => ''))?.[1] ?? NaN)
    try {
      o.log(`settling ${settleMs / 1000} s, then measuring for ${windowMs / 1000} s (no API calls meanwhile)…`)
      await sleep(settleMs)
      const before = await Promise.all(nodes.map(async n => await procCpu(n.pid)))
      const writesBefore = await Promise.all(nodes.map(async n => await syscw(n.pid)))
      const t0 = process.hrtime.bigint()
      // sample RSS once a second (reading /proc does not disturb the node)
      const rssMax = nodes.map(() => 0)
      const end = Date.now() + windowMs
      while (Date.now() < end) {
        await sleep(Math.min(1_000, Math.max(0, end - Date.now())))
        const mems = await Promise.all(nodes.map(async n => await procMem(n.pid)))
        mems.forEach((m, i) => { rssMax[i] = Math.max(rssMax[i], m.rss) })
      }
      const after = await Promise.all(nodes.map(async n => await procCpu(n.pid)))
      const seconds = Number(process.hrtime.bigint() - t0) / 1e9
      const writesAfter = await Promise.all(nodes.map(async n => await syscw(n.pid)))
      const mems = await Promise.all(nodes.map(async n => await procMem(n.pid)))
      for (let i = 0; i < nodes.length; i++) {
        const own = (after[i].utime + after[i].stime - before[i].utime - before[i].stime) / CLK_TCK
        const kids = (after[i].cutime + after[i].cstime - before[i].cutime - before[i].cstime) / CLK_TCK
        per.push({ cpuPct: own / seconds * 100, childPct: kids / seconds * 100, rssMB: mems[i].rss / MB, hwmMB: mems[i].hwm / MB, rssMaxMB: Math.max(rssMax[i], mems[i].rss) / MB, writesPerS: (writesAfter[i] - writesBefore[i]) / seconds })
        o.log(`  node ${i + 1} (pid ${nodes[i].pid}): CPU ${(own / seconds * 100).toFixed(2)} % of a core (+ ${(kids / seconds * 100).toFixed(2)} % in reaped children), VmRSS ${(mems[i].rss / MB).toFixed(1)} MB, VmHWM ${(mems[i].hwm / MB).toFixed(1)} MB`)
      }
      notes.push(`window ${seconds.toFixed(1)} s after ${settleMs / 1000} s settling; CPU from /proc/<pid>/stat with USER_HZ=${CLK_TCK}: resolution ${(100 / CLK_TCK / seconds).toFixed(3)} % over this window`)
      if (windowMs < 30_000) notes.push('--quick: the window is shorter than the 30 s renderer re-probe interval, so the probe cost may not show')
    } finally {
      await stopAll(nodes)
    }
    const figures: Figure[] = [
      { label: 'CPU, worst of 3 nodes (own process)', value: maxOf(per.map(p => p.cpuPct)), unit: '% core', target: { op: '<', value: CPU_TARGET_PCT }, headline: true, digits: 2 },
      { label: 'CPU incl. reaped children, worst', value: maxOf(per.map(p => p.cpuPct + p.childPct)), unit: '% core', target: { op: '<', value: CPU_TARGET_PCT }, digits: 2 },
      { label: 'VmRSS at end, worst of 3 nodes', value: maxOf(per.map(p => p.rssMB)), unit: 'MB', target: { op: '<=', value: RSS_TARGET_MB }, headline: true, digits: 1 },
      { label: 'VmRSS max during window, worst', value: maxOf(per.map(p => p.rssMaxMB)), unit: 'MB', target: { op: '<=', value: RSS_TARGET_MB }, digits: 1 },
      { label: 'write syscalls per second, worst', value: maxOf(per.map(p => p.writesPerS)), unit: '/s', digits: 0 },
      { label: 'VmHWM (peak since start), worst', value: maxOf(per.map(p => p.hwmMB)), unit: 'MB', digits: 1 }
    ]
    per.forEach((p, i) => figures.push({ label: `  node ${i + 1}: CPU own / +children / RSS`, value: p.cpuPct, unit: `% / ${(p.cpuPct + p.childPct).toFixed(2)} % / ${p.rssMB.toFixed(1)} MB`, digits: 2 }))
    return { name: this.name, title: this.title + ` [${windowMs / 1000} s window]`, figures, notes }
  }
}
