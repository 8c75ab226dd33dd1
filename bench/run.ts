/**
 * `npm run bench` — runs every benchmark, or the ones named:
 *
 *   node dist/bench/run.js                     all of them
 *   node dist/bench/run.js join planner        some (names or aliases)
 *   node dist/bench/run.js --quick             shorter windows / fewer repetitions
 *   node dist/bench/run.js --list
 *
 * Each benchmark prints a block (figure, target, PASS/MISS); a summary table
 * follows. Timings on a shared machine are noisy: these are medians and
 * ratios, not tests, and the exit code is 0 whatever they show (2 only for
 * a usage error). Every process a benchmark starts is stopped at the end,
 * also on failure and on Ctrl-C.
 */
import { cpus, loadavg } from 'node:os'
import { cleanupSync, fmt, installCleanupHooks, printResult, targetText, verdict, type Bench, type BenchResult } from './common.js'
import { joinTime } from './join-time.js'
import { idleNode } from './idle-node.js'
import { farmEfficiency } from './farm-efficiency.js'
import { schedulerPlanner } from './scheduler-planner.js'
import { demoTime } from './demo-time.js'
import { bundleThroughput } from './bundle-throughput.js'

const BENCHES: Bench[] = [schedulerPlanner, joinTime, idleNode, farmEfficiency, demoTime, bundleThroughput]

function usage (): string {
  return `usage: node dist/bench/run.js [--quick] [--list] [NAME…]\nbenchmarks: ${BENCHES.map(b => `${b.name} (${b.aliases.join(', ')})`).join('; ')}`
}

async function main (): Promise<number> {
  const args = process.argv.slice(2)
  const quick = args.includes('--quick')
  if (args.includes('--help') || args.includes('-h')) { console.log(usage()); return 0 }
  if (args.includes('--list')) { for (const b of BENCHES) console.log(`${b.name.padEnd(20)} ${b.title}`); return 0 }
  const names = args.filter(a => !a.startsWith('-'))
  const unknownFlags = args.filter(a => a.startsWith('-') && a !== '--quick')
  if (unknownFlags.length > 0) { console.error(`unknown option ${unknownFlags.join(' ')}\n${usage()}`); return 2 }
  const chosen: Bench[] = []
  for (const n of names) {
    const b = BENCHES.find(x => x.name === n || x.aliases.includes(n))
    if (b == null) { console.error(`unknown benchmark "${n}"\n${usage()}`); return 2 }
    if (!chosen.includes(b)) chosen.push(b)
  }
  const run = chosen.length > 0 ? chosen : BENCHES
  installCleanupHooks()
  console.log(`farmesh benchmarks${quick ? ' (--quick)' : ''}: ${run.map(b => b.name).join(', ')} — Node ${process.version}, ${new Date().toISOString()}`)

  const results: BenchResult[] = []
  for (const b of run) {
    console.log(`\n-- ${b.name} …`)
    const t0 = Date.now()
    const load0 = loadavg()[0]
    let r: BenchResult
    try {
      r = await b.run({ quick, log: (s) => { console.log(s) } })
    } catch (err: any) {
      r = { name: b.name, title: b.title, figures: [], notes: [], error: err?.stack ?? String(err) }
    } finally {
      cleanupSync(3_000) // whatever a failed benchmark left running
    }
    r.notes.push(`took ${((Date.now() - t0) / 1000).toFixed(1)} s; 1-min load average ${load0.toFixed(2)} before, ${loadavg()[0].toFixed(2)} after (${cpus().length} CPUs): other work on the machine skews timings`)
    printResult(r)
    results.push(r)
  }

  console.log('\n== summary ' + '='.repeat(68))
  const rows: string[][] = [['benchmark', 'figure', 'value', 'target', '']]
  for (const r of results) {
    if (r.error != null) { rows.push([r.name, 'ERROR', r.error.split('\n')[0].slice(0, 60), '', 'MISS']); continue }
    const heads = r.figures.filter(f => f.headline)
    for (const f of heads.length > 0 ? heads : r.figures.slice(0, 1)) rows.push([r.name, f.label, `${fmt(f.value, f.digits)} ${f.unit}`.trim(), targetText(f), verdict(f)])
  }
  const widths = rows[0].map((_, i) => Math.max(...rows.map(row => row[i].length)))
  for (const [i, row] of rows.entries()) {
    console.log('  ' + row.map((c, j) => c.padEnd(widths[j])).join('  ').trimEnd())
    if (i === 0) console.log('  ' + widths.map(w => '-'.repeat(w)).join('  '))
  }
  const misses = rows.slice(1).filter(r => r[4] === 'MISS').length
  const allMisses = results.flatMap(r => r.figures.filter(f => verdict(f) === 'MISS').map(f => `${r.name}: ${f.label}`))
  console.log(`\n${misses === 0 ? 'all headline targets met' : `${misses} headline figure(s) miss their target`}${allMisses.length > 0 ? `; every figure that misses: ${allMisses.join('; ')}` : ''}`)
  console.log('(benchmarks report, they do not fail the build: exit code 0)')
  return 0
}

main().then(code => { cleanupSync(); process.exitCode = code }, err => { console.error(err); cleanupSync(); process.exitCode = 0 })
