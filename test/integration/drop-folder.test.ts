import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { startLoopbackNode, type LoopbackNode } from './loopback-node.js'
import { waitFor } from '../harness/wait.js'
import { demoScene } from '../../dist/node/renderers/demo-scene.js'

describe('drop folder (the patent\'s hot folder)', () => {
  let node: LoopbackNode
  let drop: string

  beforeAll(async () => {
    drop = await mkdtemp(join(tmpdir(), 'farmesh-drop-'))
    node = await startLoopbackNode(['--drop-folder', drop, '--slots', '2'])
  })
  afterAll(async () => {
    await node?.stop()
    await rm(drop, { recursive: true, force: true })
  })

  it('submits a spec that appears, moves it to submitted/, and renders it', async () => {
    await writeFile(join(drop, 'scene.json'), JSON.stringify(demoScene(4)))
    await writeFile(join(drop, 'shot.yaml'), 'name: dropped-shot\nframes: 1-4\nrenderer: builtin\nscene: scene.json\n')
    await waitFor(async () => (await readdir(join(drop, 'submitted'))).includes('shot.yaml'), { timeoutMs: 15_000, message: 'spec moved to submitted/' })
    // the scene is not a spec: it stays where it is
    expect(await readdir(drop)).toContain('scene.json')
    const job = await waitFor(async () => {
      const jobs = JSON.parse((await node.cli('jobs', '--json')).stdout)
      const j = jobs.find((x: any) => x.name === 'dropped-shot')
      return j?.state === 'done' ? j : undefined
    }, { timeoutMs: 60_000, message: 'dropped job done' })
    expect(job.frames.done).toBe(4)
  })

  it('moves a bad spec to rejected/ with the reason, and queues nothing', async () => {
    await writeFile(join(drop, 'bad.yaml'), 'name: broken\nframes: 9-1\nrenderer: builtin\nscene: scene.json\n')
    await waitFor(async () => (await readdir(join(drop, 'rejected'))).includes('bad.yaml.error.txt'), { timeoutMs: 15_000, message: 'spec rejected' })
    expect(await readFile(join(drop, 'rejected', 'bad.yaml.error.txt'), 'utf8')).toMatch(/^frames: .*9-1/)
    const jobs = JSON.parse((await node.cli('jobs', '--json')).stdout)
    expect(jobs.some((j: any) => j.name === 'broken')).toBe(false)
  })
})
