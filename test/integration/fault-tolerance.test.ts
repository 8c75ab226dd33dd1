/**
 * "One scheduler per site, elected; nothing lost when any host dies", tested
 * by breaking a farm of namespace hosts running real `farmesh start`
 * processes:
 *
 *   1. kill -9 of the scheduler's host mid-job
 *   6. a deposed scheduler's term is fenced off by a renderer (right after 1)
 *   2. kill -9 of a rendering host mid-frame
 *   3. the origin switched off mid-job, then on again
 *   4. a 20 s network partition, then healing
 *   5. a seeded random run of kills, restarts, partitions and heals
 *      (FARMESH_FAULT_SEED=N reproduces one; see test/harness/fault-injector.ts)
 *
 * Frames are real builtin renders (test/fixtures/slow-frame.mjs: sleep, then
 * ray-trace), so outputs are compared pixel for pixel with a reference
 * rendered directly. "A host dies" kills the node and the renders it started.
 *
 * Needs root; build first (`npx tsc -p tsconfig.json`).
 */
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { assertBuilt, runCliJson } from '../harness/farm.js';
import { processesWith } from '../harness/jobs.js';
import { netnsSupported } from '../harness/netns.js';
import { waitFor } from '../harness/wait.js';
import {
  checkOutputs,
  Cluster,
  DispatchRecorder,
  describeTimes,
  readRenderLog,
  renderReference,
  rendersPerFrame,
  sleep,
  slowJobArgs,
  STALE_DISPATCH,
  writeScene,
  type JobViewT,
  type SlowJob,
} from '../harness/faults.js';
import { runFaultScenario } from '../harness/fault-injector.js';

const SITE = `faults-${process.pid}`;
const HOSTS = 5;
const SIZE = { width: 160, height: 90 };
const SCENE_FRAMES = 100;

const range = (a: number, b: number) => Array.from({ length: b - a + 1 }, (_, i) => a + i);
const since = (t0: number) => `${((Date.now() - t0) / 1000).toFixed(1)} s`;
/** Figures for the final summary. */
const figures: Record<string, unknown> = {};

describe.skipIf(!netnsSupported())('fault tolerance', () => {
  let cluster: Cluster | undefined;
  let work: string;
  let scene: string;
  let refDir: string;
  let renderLog: string;
  let jobCounter = 0;

  const c = () => cluster!;
  const all = () => range(0, HOSTS - 1);

  beforeAll(async () => {
    assertBuilt();
    const t0 = Date.now();
    cluster = await Cluster.start({ hosts: HOSTS, site: SITE, slots: 2, log: (l) => console.log(`[${since(t0)}] ${l}`) });
    work = await cluster.farm.tempDir('faults-work');
    scene = await writeScene(work, SCENE_FRAMES);
    refDir = await renderReference(scene, 1, 60, SIZE.width, SIZE.height, path.join(work, 'ref'));
    renderLog = path.join(work, 'renders.jsonl');
    console.log(`farm of ${HOSTS} up in ${since(t0)}; scheduler n0 ${cluster.ids[0]}`);
  }, 120_000);

  afterEach((ctx) => {
    if (ctx.task.result?.state === 'fail') cluster?.farm.printLogs(`failed: ${ctx.task.name}`);
    // no node may die of its own accord
    const crashed = cluster?.unexpectedExits() ?? [];
    if (crashed.length > 0) console.error(`nodes that died on their own:\n${crashed.join('\n')}`);
    expect(crashed).toEqual([]);
  });

  afterAll(async () => {
    await cluster?.destroy();
    console.log(`fault-tolerance figures: ${JSON.stringify(figures, null, 2)}`);
  }, 60_000);

  /** Every host up again, one scheduler everyone agrees on. */
  async function allUp(): Promise<{ scheduler: number; term: number }> {
    await c().restartDead();
    const a = await c().waitAgreement(all(), { timeoutMs: 45_000, message: 'all hosts up and agreeing' });
    return { scheduler: c().indexOf(a.scheduler), term: a.term };
  }

  function job(frames: string, sleepMs: number): SlowJob {
    return { scene, frames, sleepMs, ...SIZE, log: renderLog, tag: `ft${process.pid}x${++jobCounter}` };
  }

  async function submitFrom(i: number, j: SlowJob): Promise<string> {
    const res = await runCliJson<{ id: string }>(c().hosts[i]!, ['submit', ...slowJobArgs(j), '--data', c().dir(i)], { timeoutMs: 30_000 });
    return res.id;
  }

  function jobOn(i: number, id: string): Promise<JobViewT> {
    return c().api<JobViewT>(i, 'GET', `/v1/jobs/${id}`);
  }

  /** Polls the job on any of `ask` until `pred`. */
  function waitJob(ask: () => number[], id: string, pred: (j: JobViewT) => boolean, timeoutMs: number, message: string): Promise<JobViewT> {
    return waitFor(async () => {
      for (const i of ask()) {
        const j = await jobOn(i, id).catch(() => undefined);
        if (j !== undefined && pred(j)) return j;
      }
      return false;
    }, { timeoutMs, intervalMs: 200, message });
  }

  const doneFrames = (j: JobViewT) => j.frames.filter((f) => f.state === 'done').length;

  it('kill -9 of the scheduler host mid-job: a new scheduler within 5 s, the job completes, every frame once and pixel-identical', async () => {
    const { scheduler: S, term: T0 } = await allUp();
    const O = (S + 1) % HOSTS;
    // short frames: a slot frees every ~0.2 s, so the new scheduler's first dispatch shows when it took over
    const j = job('1-40', 1000);
    const id = await submitFrom(O, j);
    const survivors = () => all().filter((i) => i !== S && c().alive(i));
    const rec = new DispatchRecorder(c(), () => survivors().slice(0, 2), 100);
    rec.follow(id);
    try {
      await waitJob(survivors, id, (v) => doneFrames(v) >= 10, 60_000, 'ten frames done before the kill');

      const tKill = await c().killHost(S);
      // poll every survivor's status until all of them name one new scheduler
      let firstSeen: number | undefined;
      const agreed = await waitFor(async () => {
        const st = await Promise.all(survivors().map((i) => c().status(i).catch(() => undefined)));
        const now = Date.now();
        const named = st.map((s) => s?.scheduler ?? null);
        if (firstSeen === undefined && named.some((x) => x !== null && x !== c().ids[S])) firstSeen = now;
        const same = named.every((x) => x !== null && x === named[0] && x !== c().ids[S]) && st.every((s) => s!.term === st[0]!.term);
        return same ? { at: now, scheduler: named[0]!, term: st[0]!.term } : false;
      }, { timeoutMs: 30_000, intervalMs: 50, message: 'the survivors to agree on a new scheduler' });
      const electionMs = agreed.at - tKill;
      const firstDispatch = await waitFor(() => rec.firstAfter(tKill), { timeoutMs: 30_000, intervalMs: 100, message: 'a dispatch by the new scheduler' });
      const failoverMs = firstDispatch.dispatchedAt - tKill;
      console.log(`scheduler ${c().name(S)} killed: first survivor names a new one after ${firstSeen! - tKill} ms, all agree on ${c().name(agreed.scheduler)} (term ${agreed.term}) after ${electionMs} ms; its first dispatch ${failoverMs} ms after the kill`);
      figures.schedulerKill = { electionMs, firstSurvivorMs: firstSeen! - tKill, failoverMs, oldTerm: T0, newTerm: agreed.term };
      expect(agreed.term).toBeGreaterThan(T0);
      expect(electionMs).toBeLessThan(5_000);
      expect(failoverMs).toBeLessThan(5_000);
      await c().waitAgreement(survivors(), { timeoutMs: 15_000, message: 'survivors to agree (tables too)' });

      const final = await waitJob(survivors, id, (v) => v.state !== 'active' && v.state !== 'queued', 90_000, `job ${id} to end`);
      expect(final.state, final.reason).toBe('done');
      const cli = await runCliJson<JobViewT>(c().hosts[O]!, ['job', id, '--data', c().dir(O)]);
      expect(cli.frames.map((f) => f.frame)).toEqual(range(1, 40));
      expect(cli.frames.every((f) => f.state === 'done')).toBe(true);
      expect(await checkOutputs(c(), O, id, range(1, 40), refDir)).toEqual([]);
      const twice = [...rendersPerFrame(readRenderLog(renderLog), j.tag)].filter(([, n]) => n > 1).length;
      console.log(`job ${id}: done, ${twice}/40 frame(s) rendered twice`);
    } finally {
      await rec.stop();
    }
  });

  it('a deposed scheduler (older term) is refused by a renderer: no process starts', async () => {
    const live = c().live();
    const a = await c().waitAgreement(live, { timeoutMs: 20_000 });
    const T = a.term;
    expect(T).toBeGreaterThanOrEqual(2); // a failover happened (previous test)
    const R = live.find((i) => c().ids[i] !== a.scheduler)!;
    const st = await c().status(R);
    expect(st.term).toBe(T);
    const target = st.addresses.find((x) => x.startsWith(`/ip4/${c().hosts[R]!.ip}/tcp/`))!;
    const marker = `stale-marker-${process.pid}-${Date.now()}`;
    const r = await c().hosts[R]!.exec(process.execPath, [STALE_DISPATCH, '--target', target, '--site', SITE, '--term', String(T - 1), '--current', String(T), '--marker', marker, '--watch-ms', '2500'], { timeoutMs: 40_000 });
    expect(r.code, r.stderr).toBe(0);
    const res = JSON.parse(r.stdout) as Record<string, any>;
    console.log(`dispatch with term ${T - 1} to ${c().name(R)} (term ${T}): ${JSON.stringify(res.dispatch)}`);
    expect(res.error).toBeUndefined();
    expect(res.handshake).toBe('admitted');
    expect(res.dispatch.accepted).toBe(false);
    expect(res.dispatch.reason).toMatch(/stale term/);
    expect(res.processesSeen).toBe(0);
    expect(processesWith(marker)).toEqual([]);
    // the same connection works with the current term: the refusal was the term
    expect(res.killStale.killed ?? 0).toBe(0);
    expect(res.killStale.reason ?? '').toMatch(/stale term/);
    expect(res.killCurrent).toEqual({ killed: 0 });
    expect((res.running as Array<{ jobId: string }>).some((t) => t.jobId === res.jobId)).toBe(false);
    const running = await c().api<Array<{ jobId: string }>>(R, 'GET', '/v1/running');
    expect(running.some((t) => t.jobId === res.jobId)).toBe(false);
    expect((await c().status(R)).term).toBe(T);
  });

  it('kill -9 of a rendering host mid-frame: its frames are dispatched again within 5 s', async () => {
    const { scheduler: S } = await allUp();
    const O = (S + 1) % HOSTS;
    const j = job('1-6', 8000);
    const id = await submitFrom(O, j);
    const others = () => all().filter((i) => i !== S && i !== O);
    // every frame running, and the renders in their sleep (mid-frame)
    const running = await waitJob(() => [O], id, (v) => v.tasks.every((t) => t.state === 'running' && t.startedAt != null), 30_000, 'all six frames running');
    const victim = others().find((i) => running.tasks.some((t) => t.host === c().ids[i]));
    expect(victim, 'a host other than the scheduler and the origin renders').toBeDefined();
    const V = victim!;
    const lost = running.tasks.filter((t) => t.host === c().ids[V]);
    await waitFor(() => {
      const started = readRenderLog(renderLog).filter((e) => e.tag === j.tag && e.ev === 'start' && e.host === c().hosts[V]!.hostname);
      return started.length >= lost.length;
    }, { timeoutMs: 15_000, message: 'the victim renders' });
    await sleep(500);

    const tKill = await c().killHost(V);
    const again = await waitJob(() => [O], id, (v) => lost.every((l) => {
      const t = v.tasks[l.index]!;
      return t.dispatchedAt != null && t.dispatchedAt > tKill && t.host !== c().ids[V];
    }), 20_000, 'the lost frames to be dispatched again');
    const requeueMs = lost.map((l) => again.tasks[l.index]!.dispatchedAt! - tKill);
    console.log(`renderer ${c().name(V)} killed with frames ${lost.map((t) => t.frames.join(',')).join(' ')}: dispatched again after ${requeueMs.join(', ')} ms`);
    figures.rendererKill = { requeueMs };
    for (const ms of requeueMs) expect(ms).toBeLessThan(5_000);

    const final = await waitJob(() => [O], id, (v) => v.state !== 'active' && v.state !== 'queued', 60_000, `job ${id} to end`);
    expect(final.state, final.reason).toBe('done');
    expect(await checkOutputs(c(), O, id, range(1, 6), refDir)).toEqual([]);
  });

  it('the origin switched off mid-job: the job completes; back on, it receives every output', async () => {
    const { scheduler: S } = await allUp();
    const O = (S + 2) % HOSTS;
    const j = job('1-30', 2000);
    const id = await submitFrom(O, j);
    const others = () => all().filter((i) => i !== O && c().alive(i));
    await waitJob(others, id, (v) => doneFrames(v) >= 5, 60_000, 'five frames done');
    const tOff = await c().stopNode(O);

    const final = await waitJob(others, id, (v) => v.state !== 'active' && v.state !== 'queued', 90_000, `job ${id} to end without its origin`);
    expect(final.state, final.reason).toBe('done');
    const W = S !== O ? S : others()[0]!;
    const cli = await runCliJson<JobViewT>(c().hosts[W]!, ['job', id, '--data', c().dir(W)]);
    expect(cli.state).toBe('done');
    expect(cli.frames.every((f) => f.state === 'done')).toBe(true);
    const atOrigin = (await readdir(path.join(c().dir(O), 'outputs', id)).catch(() => [])).length;
    console.log(`origin ${c().name(O)} off ${since(tOff)}: job done; ${atOrigin}/30 outputs at the origin so far`);

    const tOn = Date.now();
    await c().restart(O);
    const problems = await waitFor(async () => {
      const p = await checkOutputs(c(), O, id, range(1, 30), refDir);
      return p.length === 0 ? p : false;
    }, { timeoutMs: 60_000, intervalMs: 1000, message: 'every output at the origin after it came back' }).catch(async (e: Error) => [e.message, ...(await checkOutputs(c(), O, id, range(1, 30), refDir))]);
    expect(problems).toEqual([]);
    console.log(`origin back on: every output there ${since(tOn)} after the restart`);
    figures.originOff = { outputsBeforeRestart: atOrigin, allOutputsAfterRestartMs: Date.now() - tOn };
    // and it hears that its job finished
    await waitFor(async () => (await c().api<{ finished: { state: string } | null }>(O, 'GET', `/v1/jobs/${id}/outputs`)).finished?.state === 'done', {
      timeoutMs: 30_000, intervalMs: 500, message: 'the origin to record that its job finished',
    });
  });

  it('a 20 s partition: both sides render; healed, one scheduler, the job completes, every frame once', async () => {
    const { scheduler: S, term: T0 } = await allUp();
    const O = (S + 1) % HOSTS;
    const A = [S, O];
    const B = all().filter((i) => !A.includes(i));
    const j = job('1-60', 3000);
    const id = await submitFrom(O, j);
    const rec = new DispatchRecorder(c(), () => [O, B[0]!], 250);
    rec.follow(id);
    try {
      await waitJob(() => [O], id, (v) => doneFrames(v) >= 8, 60_000, 'eight frames done before the split');
      const tSplit = Date.now();
      await c().lan.partition(A.map((i) => c().hosts[i]!), B.map((i) => c().hosts[i]!));
      console.log(`partitioned {${A.map((i) => c().name(i))}} | {${B.map((i) => c().name(i))}}`);
      const sideB = await c().waitAgreement(B, { timeoutMs: 15_000, message: 'side B to elect its own scheduler' });
      console.log(`side B elected ${c().name(sideB.scheduler)} in term ${sideB.term} after ${since(tSplit)}`);
      expect(sideB.term).toBeGreaterThan(T0);
      const sideA = await c().waitAgreement(A, { timeoutMs: 15_000, message: 'side A to keep its scheduler' });
      expect(sideA.scheduler).toBe(c().ids[S]);

      await sleep(Math.max(0, tSplit + 20_000 - Date.now()));
      const tHeal = Date.now();
      await c().lan.heal();
      // watch closely how the two schedulers become one
      const seq: string[] = [];
      let dualMs = 0;
      let last = '';
      let agreedSince: number | undefined;
      const watchUntil = Date.now() + 10_000;
      while (Date.now() < watchUntil && (agreedSince === undefined || Date.now() - agreedSince < 1_000)) {
        const t = Date.now();
        const st = await Promise.all(all().map((i) => c().status(i).catch(() => undefined)));
        const line = st.map((x, i) => `${c().name(i)}->${x === undefined ? '?' : `${c().name(x.scheduler)}@${x.term}`}`).join(' ');
        const selfDeclared = st.filter((x) => x !== undefined && x.scheduler === x.peerId).length;
        if (selfDeclared > 1) dualMs += 100;
        const same = st.every((x) => x !== undefined && x.scheduler !== null && x.scheduler === st[0]!.scheduler && x.term === st[0]!.term);
        agreedSince = same ? (agreedSince ?? t) : undefined;
        if (line !== last) seq.push(`+${t - tHeal} ms ${line}`);
        last = line;
        await sleep(Math.max(0, 100 - (Date.now() - t)));
      }
      console.log(`after healing (${Math.round(dualMs / 100) * 100} ms with two nodes naming themselves scheduler):\n  ${seq.join('\n  ')}`);
      const healed = await c().waitAgreement(all(), { timeoutMs: 30_000, message: 'one scheduler again after healing' });
      console.log(`healed: ${c().name(healed.scheduler)} schedules in term ${healed.term}, agreed ${since(tHeal)} after healing`);
      figures.partition = { sideBTerm: sideB.term, healedTerm: healed.term, agreeAfterHealMs: Date.now() - tHeal };

      // during the split both sides finished frames
      const hostSide = new Map(all().map((i) => [c().hosts[i]!.hostname, A.includes(i) ? 'A' : 'B']));
      const ends = readRenderLog(renderLog).filter((e) => e.tag === j.tag && e.ev === 'end' && e.t > tSplit + 5_000 && e.t < tHeal);
      const endsA = ends.filter((e) => hostSide.get(e.host) === 'A').length;
      const endsB = ends.filter((e) => hostSide.get(e.host) === 'B').length;
      const viewB = rec.latest.get(`${id}@${B[0]}`);
      const doneB = (viewB?.view.tasks ?? []).filter((t) => t.state === 'done' && B.some((i) => c().ids[i] === t.host)).length;
      console.log(`during the split: ${endsA} frame(s) rendered on side A, ${endsB} on side B; side B's scheduler had ${doneB} done on side B`);
      expect(endsA).toBeGreaterThan(0);
      expect(endsB).toBeGreaterThan(0);

      const final = await waitJob(all, id, (v) => v.state !== 'active' && v.state !== 'queued', 90_000, `job ${id} to end after healing`);
      expect(final.state, final.reason).toBe('done');
      for (const i of all()) {
        const v = await jobOn(i, id);
        expect(v.state, `job state as ${c().name(i)} sees it`).toBe('done');
      }
      const cli = await runCliJson<JobViewT>(c().hosts[B[1]!]!, ['job', id, '--data', c().dir(B[1]!)]);
      expect(cli.frames.map((f) => f.frame)).toEqual(range(1, 60));
      expect(cli.frames.filter((f) => f.state !== 'done')).toEqual([]);
      const problems = await waitFor(async () => {
        const p = await checkOutputs(c(), O, id, range(1, 60), refDir);
        return p.length === 0 ? p : false;
      }, { timeoutMs: 30_000, intervalMs: 1000, message: 'every output at the origin' }).catch(async (e: Error) => [e.message, ...(await checkOutputs(c(), O, id, range(1, 60), refDir))]);
      expect(problems).toEqual([]);
      const twice = [...rendersPerFrame(readRenderLog(renderLog), j.tag)].filter(([, n]) => n > 1).length;
      console.log(`partition job: ${twice}/60 frame(s) rendered more than once`);
      (figures.partition as Record<string, unknown>).framesRenderedTwice = twice;
    } finally {
      await c().lan.heal().catch(() => undefined);
      await rec.stop();
    }
  });

  it('a seeded random run of kills, restarts, partitions and heals loses nothing', async () => {
    // the shared farm is done with: free its CPU for the random run's own farm
    await cluster?.destroy();
    cluster = undefined;
    // a fixed seed in the suite (it kills the origin mid-upload, among others); `npm run soak` explores new ones
    const seed = Number(process.env.FARMESH_FAULT_SEED ?? 1683175652);
    console.log(`random fault run: seed ${seed} (reproduce with FARMESH_FAULT_SEED=${seed})`);
    const t0 = Date.now();
    const r = await runFaultScenario({
      seed, hosts: 5, frames: 100, durationMs: Number(process.env.FARMESH_FAULT_MS ?? 60_000),
      log: (l) => console.log(`[fault ${since(t0)}] ${l}`),
    });
    console.log(`random fault run (seed ${seed}) in ${since(t0)}: ${r.faults.length} faults`);
    console.log(`  failover (scheduler killed -> first dispatch by the new one): ${describeTimes(r.failoverTimesMs)}`);
    console.log(`  election (scheduler killed -> a survivor names the new one): ${describeTimes(r.electionTimesMs)}`);
    console.log(`  requeue (host killed -> its frames dispatched again): ${describeTimes(r.requeueTimesMs)}`);
    console.log(`  frames rendered twice: ${r.framesRenderedTwice}/${r.totalFrames} (${((100 * r.framesRenderedTwice) / Math.max(1, r.totalFrames)).toFixed(1)} %), ${r.renders} renders in all`);
    figures.random = { ...r, faults: r.faults.length };
    expect(r.violations).toEqual([]);
  }, 300_000);
});
