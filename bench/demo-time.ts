/**
 * Wall time of `farmesh demo` (the README's first command): 3 nodes on
 * loopback render the 48-frame built-in animation and write frames, contact
 * sheet and GIF. The CLI is spawned (in its own process group, so its nodes
 * go with it on abort) into a temp dir; median of 3 (1 with --quick).
 *
 * There is no target in the issues; 60 s is used as a "quick start" bound.
 */
import { median, maxOf, minOf, removeTempDir, spawnTracked, stopTracked, tempDir, CLI, type Bench, type BenchOptions, type BenchResult } from './common.js'
import { join } from 'node:path'

const TARGET_S = 60

export const demoTime: Bench = {
  name: 'demo-time',
  aliases: ['demo'],
  title: 'demo-time: wall time of `farmesh demo` (3 nodes, 48 built-in frames)',
  async run (o: BenchOptions): Promise<BenchResult> {
    const reps = o.quick ? 1 : 3
    const walls: number[] = []
    const reported: number[] = []
    const notes: string[] = []
    for (let i = 0; i < reps; i++) {
      const dir = tempDir('demo')
      const t0 = process.hrtime.bigint()
      const t = spawnTracked(process.execPath, [CLI, 'demo', '--out', join(dir, 'farmesh-demo'), '--json'], { cwd: dir })
      let out = ''
      t.proc.stdout?.setEncoding('utf8').on('data', (d: string) => { out += d })
      const timer = setTimeout(() => { void stopTracked(t, 2_000) }, 300_000)
      const exit = await t.exited
      clearTimeout(timer)
      await stopTracked(t, 1_000) // anything its group left behind
      const wall = Number(process.hrtime.bigint() - t0) / 1e9
      if (exit.code !== 0) {
        notes.push(`run ${i + 1}: exit ${String(exit.code ?? exit.signal)}: ${t.tail.slice(-3).join(' / ')}`)
      } else {
        walls.push(wall)
        try { reported.push(JSON.parse(out).wallSeconds) } catch {}
        o.log(`  run ${i + 1}: ${wall.toFixed(2)} s (the demo says ${reported[reported.length - 1]?.toFixed(2) ?? '?'} s)`)
      }
      removeTempDir(dir)
    }
    notes.push(`no target is set for the demo; ${TARGET_S} s is a chosen "quick start" bound. Wall = spawn of the CLI → its exit (Node start-up, 3 nodes, render, contact sheet, GIF, clean stop)`)
    return {
      name: this.name,
      title: this.title,
      figures: [
        { label: `wall time, median of ${walls.length}`, value: walls.length > 0 ? median(walls) : null, unit: 's', target: { op: '<=', value: TARGET_S }, headline: true, digits: 2 },
        { label: 'wall time, min / max', value: minOf(walls), unit: `s / ${maxOf(walls)?.toFixed(2) ?? 'n/a'} s`, digits: 2 },
        { label: 'as reported by the demo (start → files written), median', value: median(reported), unit: 's', digits: 2 }
      ],
      notes
    }
  }
}
