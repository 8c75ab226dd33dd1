import '../../node/polyfill.js'
import { Writable } from 'node:stream'
import { describe, expect, it } from 'vitest'
import { streamPair } from '@libp2p/utils'
import type { Connection } from '@libp2p/interface'
import { ApiError } from '../../node/errors.js'
import { callRpc, serveRpc } from '../../protocols/rpc.js'
import { FramedReceiver, encodeFrame } from '../../protocols/blob.js'

/**
 * Regressions found by the scheduling-policy integration tests
 * (test/integration/policies.test.ts).
 */
const LIMITS = { maxBytes: 64 * 1024, timeoutMs: 5_000 }

describe('rpc error relay', () => {
  it('keeps the HTTP status of a refusal, so a usage error from a remote scheduler stays a usage error', async () => {
    const [out, inn] = await streamPair()
    const served = serveRpc(inn, (v) => v, async () => {
      throw Object.assign(new ApiError('denyHosts: "x*" matches no host of the site', 400), { field: 'denyHosts' })
    }, LIMITS)
    const connection = { newStream: async () => out } as unknown as Connection
    const err: any = await callRpc(connection, '/test/1.0.0', { op: 'submit' }, LIMITS).catch((e: any) => e)
    await served
    expect(err).toMatchObject({ name: 'ApiError', field: 'denyHosts', status: 400 })
    expect(err.message).toMatch(/matches no host/)
  })

  it('relays no status for errors that have none', async () => {
    const [out, inn] = await streamPair()
    const served = serveRpc(inn, (v) => v, async () => { throw new Error('boom') }, LIMITS)
    const err: any = await callRpc({ newStream: async () => out } as unknown as Connection, '/test/1.0.0', {}, LIMITS).catch((e: any) => e)
    await served
    expect(err.status).toBeUndefined()
    expect(err.message).toBe('boom')
  })
})

describe('FramedReceiver', () => {
  it('a stream reset between the header and body() rejects body() without an unhandled error event on the sink', async () => {
    const [out, inn] = await streamPair()
    const rx = new FramedReceiver(inn)
    out.send(encodeFrame({ name: 'frame_0001.png' }))
    await rx.readHeader(AbortSignal.timeout(5_000))
    // the sender gives up (its job was killed) while the receiver is still deciding where to put the body
    out.abort(new Error('job killed'))
    await new Promise((resolve) => setTimeout(resolve, 50))
    // no 'error' listener on purpose: before the fix, destroying it with the failure crashed the process
    const sink = new Writable({ write (_c, _e, cb) { cb() } })
    // record an 'error' nobody listens to instead of letting it take the test process down
    const unhandled: unknown[] = []
    const emit = sink.emit.bind(sink)
    sink.emit = ((event: string | symbol, ...args: any[]) => {
      if (event === 'error' && sink.listenerCount('error') === 0) { unhandled.push(args[0]); return false }
      return emit(event, ...args)
    }) as typeof sink.emit
    await expect(rx.body(sink, { maxBytes: 1024 })).rejects.toThrow()
    await new Promise((resolve) => setTimeout(resolve, 50)) // an 'error' is emitted on a later tick
    expect(unhandled, 'unhandled error event on the sink').toEqual([])
    expect(sink.destroyed).toBe(true)
  })
})
