/**
 * A seeded random fault run against a farm of namespace hosts, for the
 * integration test (about a minute) and for long soaks (`durationMs` as long
 * as you like):
 *
 *   const r = await runFaultScenario({ seed: 42, hosts: 5, frames: 100, durationMs: 60_000 })
 *   // r.violations is empty when nothing was lost
 *
 * It starts `hosts` nodes (2 slots each), renders a reference of the scene,
 * submits one job of `frames` slow real frames (test/fixtures/slow-frame.mjs)
 * from a random host, and then, every 2–5 s for `durationMs` (or until that
 * job is done: for a long soak, give it enough frames), does one of:
 * kill -9 a host (its node and its renders; the scheduler's host half the
 * time, the job's origin included; at most `maxDead` down at once), restart a
 * dead host on its data directory, or split the LAN in two random groups for
 * 5–15 s. Every ~10 s it also submits a small job from a random live host;
 * a submission that was answered with an id is "acknowledged". Each step
 * draws the same random numbers whatever happens, so a seed replays the same
 * decisions as long as the farm is in the same state (which host is dead or
 * schedules depends on real timing, so long runs drift apart).
 *
 * At the end it heals the network, restarts every dead host, and checks:
 * every node agrees on one scheduler and term; every acknowledged job ends
 * `done`; at its origin every frame exists exactly once (files and the
 * origin's record) and is pixel-identical to the reference. Problems are
 * returned in `violations`, never thrown, with the figures:
 *
 *   failoverTimesMs  scheduler's host killed → first dispatch after the kill
 *                    by the new scheduler (during a partition: of the
 *                    victim's side, seen through a node of that side; a
 *                    side left with one host is not counted: it cannot
 *                    commit anything). Includes waiting for a free slot.
 *   electionTimesMs  scheduler's host killed → a survivor (of its side) names a new one
 *   requeueTimesMs   host killed → each frame it was rendering dispatched again
 *   framesRenderedTwice  frames rendered to completion more than once
 *   totalFrames      frames of every acknowledged job
 *   kills            each kill with its own figures; `verbose: true` runs the
 *                    nodes at info level and prints their logs at the end
 *
 * Needs root and `npx tsc -p tsconfig.json` first. Imports the harness only
 * (vitest is not needed to call it, but farm.ts imports `afterEach` from
 * vitest, so run it under vitest or a TS loader that resolves that import).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { waitFor } from './wait.js';
import {
  checkOutputs,
  Cluster,
  DispatchRecorder,
  readRenderLog,
  renderReference,
  rendersPerFrame,
  rng,
  sleep,
  slowJobSpec,
  writeScene,
  type JobViewT,
  type SlowJob,
} from './faults.js';

export interface FaultScenarioOptions {
  seed: number;
  hosts: number;
  /** frames of the main job */
  frames: number;
  /** how long faults are injected */
  durationMs: number;
  /** sleep per frame (default: sized so the job outlasts the faults a little) */
  frameMs?: number;
  /** slots per host (default 2) */
  slots?: number;
  /** most hosts down at once (default (hosts - 1) / 2, rounded down) */
  maxDead?: number;
  /** a small job is submitted this often (default 10 s; 0: none) */
  extraJobEveryMs?: number;
  /** render size (default 160×90) */
  width?: number;
  height?: number;
  /** how long the farm may take to finish every job after the faults (default 180 s) */
  settleMs?: number;
  log?: (line: string) => void;
  /** nodes log at info level (default: errors only); printed when a violation is found */
  verbose?: boolean;
}

export interface FaultEvent {
  /** ms since the faults began */
  t: number;
  kind: 'kill' | 'restart' | 'partition' | 'heal' | 'submit';
  detail: string;
}

export interface FaultScenarioResult {
  seed: number;
  failoverTimesMs: number[];
  electionTimesMs: number[];
  requeueTimesMs: number[];
  framesRenderedTwice: number;
  totalFrames: number;
  /** completed renders of every acknowledged job (≥ totalFrames) */
  renders: number;
  faults: FaultEvent[];
  /** every kill with what was measured after it (ms since the faults began) */
  kills: Array<{ t: number; victim: number; wasScheduler: boolean; partitioned: boolean; electionMs?: number; failoverMs?: number; requeueMs: number[] }>;
  jobs: Array<{ id: string; origin: number; frames: string; state: string }>;
  violations: string[];
  durationMs: number;
}

interface Kill {
  t: number;
  victim: number;
  wasScheduler: boolean;
  partitioned: boolean;
  /** the live hosts on the victim's side of a partition (all live hosts when there is none), the victim included */
  side: number[];
  lost: Array<{ jobId: string; index: number }>;
}

interface Acked {
  id: string;
  origin: number;
  job: SlowJob;
  first: number;
  last: number;
}

export async function runFaultScenario(o: FaultScenarioOptions): Promise<FaultScenarioResult> {
  const started = Date.now();
  const rand = rng(o.seed);
  const pick = <T>(xs: T[]): T => xs[Math.floor(rand() * xs.length)]!;
  const log = o.log ?? (() => undefined);
  const slots = o.slots ?? 2;
  const width = o.width ?? 160;
  const height = o.height ?? 90;
  const maxDead = o.maxDead ?? Math.floor((o.hosts - 1) / 2);
  const frameMs = o.frameMs ?? Math.min(30_000, Math.max(1_000, Math.round((o.durationMs * o.hosts * slots * 0.45) / o.frames)));
  const extraEvery = o.extraJobEveryMs ?? 10_000;
  const stats = {
    failoverTimesMs: [] as number[],
    electionTimesMs: [] as number[],
    requeueTimesMs: [] as number[],
    framesRenderedTwice: 0,
    totalFrames: 0,
    renders: 0,
    kills: [] as FaultScenarioResult['kills'],
    jobs: [] as FaultScenarioResult['jobs'],
  };
  const violations: string[] = [];
  const faults: FaultEvent[] = [];
  const kills: Kill[] = [];
  const acked: Acked[] = [];
  let t0 = Date.now();
  const note = (kind: FaultEvent['kind'], detail: string) => {
    faults.push({ t: Date.now() - t0, kind, detail });
    log(`${kind} ${detail}`);
  };

  const work = await mkdtemp(path.join(os.tmpdir(), `farmesh-faults-${o.seed}-`));
  let cluster: Cluster | undefined;
  let recorder: DispatchRecorder | undefined;
  let monitorStop = false;
  let monitor: Promise<void> | undefined;
  const statusSamples: Array<{ t: number; i: number; scheduler: string | null; term: number }> = [];
  try {
    const scene = await writeScene(work, Math.max(2, o.frames));
    const refDir = await renderReference(scene, 1, o.frames, width, height, path.join(work, 'ref'));
    const renderLog = path.join(work, 'renders.jsonl');
    log(`seed ${o.seed}: ${o.hosts} hosts × ${slots} slots, ${o.frames} frames of ${frameMs} ms + render, faults for ${o.durationMs} ms`);
    cluster = await Cluster.start({ hosts: o.hosts, site: `fault-${process.pid}-${o.seed}`, slots, log, quiet: o.verbose !== true });
    const c = cluster;
    const all = c.hosts.map((_, i) => i);
    let jobN = 0;
    const makeJob = (first: number, last: number, ms: number): SlowJob => ({
      scene, frames: `${first}-${last}`, sleepMs: ms, width, height, log: renderLog, tag: `fi${o.seed}x${++jobN}`, maxAttempts: 20,
    });
    const submit = async (origin: number, first: number, last: number, ms: number): Promise<Acked | undefined> => {
      const job = makeJob(first, last, ms);
      try {
        const res = await c.api<{ id: string }>(origin, 'POST', '/v1/jobs', { spec: slowJobSpec(job) }, 20_000);
        const a = { id: res.id, origin, job, first, last };
        acked.push(a);
        recorder?.follow(res.id);
        note('submit', `${res.id} frames ${first}-${last} from n${origin}: acknowledged`);
        return a;
      } catch (error) {
        note('submit', `frames ${first}-${last} from n${origin}: refused (${(error as Error).message.slice(0, 160)})`);
        return undefined;
      }
    };

    // partition state: which side each host is on (undefined: not partitioned)
    let sides: [number[], number[]] | undefined;
    let healAt = 0;
    const restarting = new Map<number, Promise<unknown>>();
    const liveNow = () => c.live().filter((i) => !restarting.has(i));
    /** Nodes to ask about jobs: one per side of a partition. */
    const askList = () => {
      const live = liveNow();
      if (sides === undefined) return live.slice(0, 1);
      return sides.map((s) => s.find((i) => live.includes(i))).filter((i): i is number => i !== undefined);
    };
    recorder = new DispatchRecorder(c, askList, 250);
    monitor = (async () => {
      while (!monitorStop) {
        await Promise.all(liveNow().map(async (i) => {
          try {
            const s = await c.status(i);
            statusSamples.push({ t: Date.now(), i, scheduler: s.scheduler, term: s.term });
          } catch {
            // restarting or dead
          }
        }));
        await sleep(150);
      }
    })();

    const main = await submit(pick(all), 1, o.frames, frameMs);
    if (main === undefined) {
      violations.push('the main job was not accepted by a healthy farm');
      return result();
    }
    await waitFor(() => (recorder!.freshest(main.id)?.frames.some((f) => f.state === 'done') ? true : false), {
      timeoutMs: 60_000, intervalMs: 200, message: 'the first frame done before faults begin',
    }).catch(() => violations.push('no frame done within 60 s of submission on a healthy farm'));

    t0 = Date.now();
    let nextSubmit = t0 + (extraEvery > 0 ? extraEvery : Infinity);
    const schedulerOf = async (side: number[]): Promise<number> => {
      for (const i of side.filter((x) => liveNow().includes(x))) {
        const s = await c.status(i).catch(() => undefined);
        if (s?.scheduler != null) return c.indexOf(s.scheduler);
      }
      return -1;
    };
    const schedulerNow = async (): Promise<number> => {
      for (const i of askList()) {
        const s = await c.status(i).catch(() => undefined);
        if (s?.scheduler != null) return c.indexOf(s.scheduler);
      }
      return -1;
    };
    // faults until durationMs, or until the main job is done (a soak sizes the job to outlast it)
    while (Date.now() - t0 < o.durationMs && recorder.freshest(main.id)?.state !== 'done') {
      // every step draws the same numbers whatever happens, so a seed gives
      // the same sequence of decisions (what they hit depends on the farm's state)
      const roll = {
        delay: rand(), action: rand(), victim: rand(), scheduler: rand(), restart: rand(),
        split: rand(), order: all.map(() => rand()), hold: rand(), submitHost: rand(), submitFirst: rand(),
      };
      const within = <T>(xs: T[], r: number): T => xs[Math.floor(r * xs.length)]!;
      await sleep(2_000 + roll.delay * 3_000);
      const now = Date.now();
      if (now >= nextSubmit) {
        nextSubmit = now + extraEvery;
        const live = liveNow();
        if (live.length > 0) {
          const first = 1 + Math.floor(roll.submitFirst * Math.max(1, o.frames - 4));
          await submit(within(live, roll.submitHost), first, Math.min(o.frames, first + 4), Math.round(frameMs / 2));
        }
      }
      if (sides !== undefined && now >= healAt) {
        await c.lan.heal();
        sides = undefined;
        note('heal', 'the LAN is whole again');
        continue;
      }
      const dead = all.filter((i) => !c.alive(i) && !restarting.has(i));
      const actions: Array<[string, number]> = [];
      if (all.length - liveNow().length < maxDead && liveNow().length > 1) actions.push(['kill', 3]);
      if (dead.length > 0) actions.push(['restart', 2 + dead.length]);
      if (sides === undefined) actions.push(['partition', 1.5]);
      if (actions.length === 0) continue;
      let r = roll.action * actions.reduce((sum, [, w]) => sum + w, 0);
      const action = actions.find(([, w]) => (r -= w) < 0)?.[0] ?? actions[0]![0];
      if (action === 'kill') {
        const live = liveNow();
        const sched = await schedulerNow();
        const victim = roll.scheduler < 0.5 && live.includes(sched) ? sched : within(live, roll.victim);
        const lost = recorder.runningOn(c.ids[victim]!);
        const partitioned = sides !== undefined;
        const side = (sides?.find((g) => g.includes(victim)) ?? all).filter((i) => i === victim || liveNow().includes(i));
        // during a partition, "the scheduler" is the one of the victim's side
        const sideScheduler = partitioned ? await schedulerOf(side) : sched;
        const t = await c.killHost(victim);
        kills.push({ t, victim, wasScheduler: victim === sideScheduler, partitioned, side, lost });
        note('kill', `n${victim}${victim === sideScheduler ? ' (the scheduler)' : ''}${victim === main.origin ? ' (the origin)' : ''}${partitioned ? ' during a partition' : ''}, rendering ${lost.length} task(s)`);
      } else if (action === 'restart') {
        const i = within(dead, roll.restart);
        note('restart', `n${i}`);
        const p = c.restart(i).catch((e: Error) => violations.push(`restart of n${i} failed: ${e.message}`)).finally(() => restarting.delete(i));
        restarting.set(i, p);
      } else {
        const shuffled = [...all].sort((a, b) => roll.order[a]! - roll.order[b]!);
        const k = 1 + Math.floor(roll.split * (all.length - 1));
        sides = [shuffled.slice(0, k).sort(), shuffled.slice(k).sort()];
        healAt = Date.now() + 5_000 + roll.hold * 10_000;
        await c.lan.partition(sides[0].map((i) => c.hosts[i]!), sides[1].map((i) => c.hosts[i]!));
        note('partition', `{${sides[0].map((i) => `n${i}`)}} | {${sides[1].map((i) => `n${i}`)}} for ${Math.round((healAt - Date.now()) / 1000)} s`);
      }
    }

    // settle: whole network, every host up, one scheduler
    const tSettle = Date.now();
    if (sides !== undefined) {
      await c.lan.heal();
      sides = undefined;
      note('heal', 'end of faults');
    }
    await Promise.all(restarting.values());
    await c.restartDead().catch((e: Error) => violations.push(`restarting the dead hosts failed: ${e.message}`));
    log('faults over: every host up, waiting for one scheduler');
    const agreed = await c.waitAgreement(all, { timeoutMs: 60_000, message: 'one scheduler after the faults' }).catch((e: Error) => {
      violations.push(`no single scheduler 60 s after the faults ended: ${e.message}`);
      return undefined;
    });
    if (agreed !== undefined) log(`n${c.indexOf(agreed.scheduler)} schedules in term ${agreed.term}, ${((Date.now() - tSettle) / 1000).toFixed(1)} s after the faults`);

    // every acknowledged job ends done, its outputs at its origin
    const settleMs = o.settleMs ?? 180_000;
    const finals = new Map<string, JobViewT>();
    await waitFor(async () => {
      for (const a of acked) {
        if (finals.has(a.id)) continue;
        const v = await c.api<JobViewT>(all[Math.floor(Math.random() * all.length)]!, 'GET', `/v1/jobs/${a.id}`).catch(() => undefined);
        if (v !== undefined && v.state !== 'active' && v.state !== 'queued') finals.set(a.id, v);
      }
      return finals.size === acked.length;
    }, { timeoutMs: settleMs, intervalMs: 1_000, message: 'every acknowledged job to end' }).catch(() => undefined);
    for (const a of acked) {
      const v = finals.get(a.id);
      if (v === undefined) {
        const now = await c.api<JobViewT>(0, 'GET', `/v1/jobs/${a.id}`).catch((e: Error) => e);
        violations.push(`acknowledged job ${a.id} (from n${a.origin}) did not end within ${settleMs / 1000} s: ${now instanceof Error ? now.message : `${now.state}, ${now.frames.filter((f) => f.state === 'done').length}/${now.frames.length} done`}`);
      } else if (v.state !== 'done') violations.push(`acknowledged job ${a.id} ended ${v.state}: ${v.reason ?? ''}`);
    }
    log(`${finals.size}/${acked.length} job(s) ended; checking outputs at their origins`);
    for (const a of acked) {
      if (finals.get(a.id)?.state !== 'done') continue;
      const frames = Array.from({ length: a.last - a.first + 1 }, (_, k) => a.first + k);
      // outputs kept by renderers while the origin was away are delivered every 5 s
      let problems: string[] = [];
      await waitFor(async () => {
        problems = await checkOutputs(c, a.origin, a.id, frames, refDir);
        return problems.length === 0;
      }, { timeoutMs: 45_000, intervalMs: 1_000, message: `outputs of ${a.id}` }).catch(() => undefined);
      violations.push(...problems);
    }

    const events = readRenderLog(renderLog);
    for (const a of acked) {
      const per = rendersPerFrame(events, a.job.tag);
      stats.totalFrames += a.last - a.first + 1;
      stats.framesRenderedTwice += [...per.values()].filter((n) => n > 1).length;
      stats.renders += [...per.values()].reduce((s, n) => s + n, 0);
    }
    for (const k of kills) {
      const m: FaultScenarioResult['kills'][number] = { t: k.t - t0, victim: k.victim, wasScheduler: k.wasScheduler, partitioned: k.partitioned, requeueMs: [] };
      // a kill during a partition counts on the victim's side: the views asked there come from its scheduler.
      // A lone survivor is left out: with no second host to hold its writes it cannot schedule (by design).
      if (k.wasScheduler && k.side.filter((i) => i !== k.victim).length >= 2) {
        const seen = statusSamples.find((s) => s.t > k.t && s.i !== k.victim && k.side.includes(s.i) && s.scheduler != null && s.scheduler !== c.ids[k.victim]);
        if (seen !== undefined) stats.electionTimesMs.push((m.electionMs = seen.t - k.t));
        const d = recorder.firstAfter(k.t, (x) => k.side.includes(x.via));
        if (d !== undefined) stats.failoverTimesMs.push((m.failoverMs = d.dispatchedAt - k.t));
      }
      for (const l of k.lost) {
        const d = recorder.firstAfter(k.t, (x) => x.jobId === l.jobId && x.index === l.index && x.host !== c.ids[k.victim]);
        if (d !== undefined) m.requeueMs.push(d.dispatchedAt - k.t);
      }
      stats.requeueTimesMs.push(...m.requeueMs);
      stats.kills.push(m);
    }
    stats.jobs = acked.map((a) => ({ id: a.id, origin: a.origin, frames: a.job.frames, state: finals.get(a.id)?.state ?? 'unknown' }));
    return result();
  } catch (error) {
    violations.push(`the scenario itself failed: ${(error as Error).stack ?? String(error)}`);
    return result();
  } finally {
    monitorStop = true;
    await monitor?.catch(() => undefined);
    await recorder?.stop().catch(() => undefined);
    if ((violations.length > 0 || o.verbose === true) && cluster !== undefined) cluster.farm.printLogs(`fault scenario seed ${o.seed}: ${violations.length} violation(s)`);
    await cluster?.destroy();
    await rm(work, { recursive: true, force: true }).catch(() => undefined);
  }

  function result(): FaultScenarioResult {
    return { seed: o.seed, ...stats, faults, violations, durationMs: Date.now() - started };
  }
}

