/**
 * Delivery observation shared by `e2e` and `drain`: the reference ingest server in its own process,
 * the emitter's table watched from a separate connection, a recorder of receipts and answered
 * requests, and the check of what the server kept against what was emitted (./verify.ts).
 */
import { Effect } from "effect"
import { SqlClient } from "effect/sql"
import type { EmitReceipt } from "../src/Emitter.ts"
import { type IngestServerProcess, makeIngestServerProcess } from "../src/testing/IngestServerProcess.ts"
import { inSample } from "../src/testing/ingestSample.ts"
import { adminClient, pollUntil, Reservoir } from "./common.ts"
import { eventIdOf, type OnAnswer, type OnFailure } from "./stack.ts"
import { type Emitted, type KeptEvent, verify } from "./verify.ts"

/** The share of events the ingest server keeps whole to be verified, unless `--verify-all`: one in 16. */
export const sampleOneIn = 16

/**
 * The ingest server as a child process, closed with the scope. Keeps every distinct id (loss and
 * duplicates by id) and, whole, the events of a sample chosen by id (`inSample`), or all of them.
 */
export const ingestServer = (verifyAll: boolean) => makeIngestServerProcess({ record: "ids", sampleIds: verifyAll ? 1 : sampleOneIn })

/** Rows left in the events table (exact count, from the admin connection). */
export const tableRows = (prefix: string) =>
  SqlClient.SqlClient.use((sql) => sql.unsafe(`SELECT count(*) FROM ${prefix}_events`).values).pipe(
    Effect.map((rows) => Number(rows[0]?.[0] ?? 0)),
    Effect.provide(adminClient),
    Effect.orDie
  )

/** Waits until the events table is empty; a cheap index probe every `intervalMs`, bounded. */
export const awaitEmptyTable = (prefix: string, intervalMs: number, limitMs: number) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const probe = sql.unsafe(`SELECT id FROM ${prefix}_events ORDER BY id LIMIT 1`).values.pipe(Effect.map((rows) => rows.length === 0))
    yield* pollUntil(`emptying ${prefix}_events`, probe, intervalMs, limitMs)
  }).pipe(Effect.provide(adminClient), Effect.orDie)

/** UUID ids ending in "0": a 1-in-16 sample chosen by the id alone, so both sides agree without coordination. */
const zero = "0".charCodeAt(0)
const sampledPayload = (payload: Uint8Array) => payload[37] === zero
export const sampledId = (id: string) => id.charCodeAt(35) === zero

/**
 * Latencies of answered requests and of sampled events: receipt → delivery acknowledged (the
 * request that carried the event answered "delivered"), and emit start → acknowledged.
 * `onPair` sees each sampled emit start → ack as it is paired, with the ack's time (soak: per minute).
 */
export const makeRecorder = (
  onPair?: (emitToAckMs: number, ackAt: number) => void,
  /**
   * Keep every receipt for the check afterwards. The soak does not: at 20 000 events/s ten
   * minutes of receipts are 12 million ids, over a gigabyte in the emitting process, whose
   * garbage collection then slowed the emitter it measures (the ingest server's seqnum ledger
   * counts its losses and duplicates instead).
   */
  keepReceipts = true
) => {
  // Every receipt (id and seq; the source and type are the benchmark's one key) and every send
  // not acknowledged as delivered: what the delivery is checked against afterwards.
  let receiptIds: Array<string> = []
  let receiptSeqs: Array<bigint> = []
  const unacknowledged = new Map<string, number>()
  const unacknowledgedSend = (payload: Uint8Array) => {
    const id = eventIdOf(payload)
    if (id !== undefined) unacknowledged.set(id, (unacknowledged.get(id) ?? 0) + 1)
  }
  const request = new Reservoir(100_000)
  const receiptToAck = new Reservoir(100_000)
  const emitToAck = new Reservoir(100_000)
  const receipts = new Map<string, { startedAt: number; at: number }>()
  const acks = new Map<string, number>()
  let requests = 0
  let delivered = 0
  let rejected = 0

  const pair = (receipt: { startedAt: number; at: number }, ackAt: number) => {
    receiptToAck.add(ackAt - receipt.at)
    emitToAck.add(ackAt - receipt.startedAt)
    onPair?.(ackAt - receipt.startedAt, ackAt)
  }

  const onAnswer: OnAnswer = (events, results, startedAt, endedAt) => {
    requests++
    request.add(endedAt - startedAt)
    for (let i = 0; i < events.length; i++) {
      if (results[i]?._tag !== "Delivered") {
        rejected++
        unacknowledgedSend(events[i]!)
        continue
      }
      delivered++
      const payload = events[i]!
      if (!sampledPayload(payload)) continue
      const id = eventIdOf(payload)
      if (id === undefined) continue
      const receipt = receipts.get(id)
      if (receipt === undefined) acks.set(id, endedAt)
      else {
        receipts.delete(id)
        pair(receipt, endedAt)
      }
    }
  }

  const onFailure: OnFailure = (events) => {
    for (const payload of events) unacknowledgedSend(payload)
  }

  const onReceipt = (receipt: EmitReceipt, startedAt: number, at: number) => {
    if (keepReceipts) {
      receiptIds.push(receipt.id)
      receiptSeqs.push(receipt.seq)
    }
    if (!sampledId(receipt.id)) return
    const ackAt = acks.get(receipt.id)
    if (ackAt === undefined) receipts.set(receipt.id, { startedAt, at })
    else {
      acks.delete(receipt.id)
      pair({ startedAt, at }, ackAt)
    }
  }

  return {
    onAnswer,
    onFailure,
    onReceipt,
    /** Forgets everything (after a warm-up). */
    reset: () => {
      request.clear()
      receiptToAck.clear()
      emitToAck.clear()
      receipts.clear()
      acks.clear()
      receiptIds = []
      receiptSeqs = []
      unacknowledged.clear()
      requests = delivered = rejected = 0
    },
    /** The receipts since the last reset, and the sends not acknowledged as delivered. */
    receipts: () => ({ ids: receiptIds, seqs: receiptSeqs, unacknowledged }),
    snapshot: () => ({
      requests,
      delivered,
      rejected,
      requestMs: request.values,
      receiptToAckMs: receiptToAck.values,
      emitToAckMs: emitToAck.values,
      /** Sampled receipts never acknowledged. */
      unpairedReceipts: receipts.size
    })
  }
}

/** What the server kept: every distinct id, and its whole-event sample (every copy). */
export const serverRecord = (server: IngestServerProcess) =>
  Effect.tryPromise({
    try: async () => {
      const [ids, sample] = await Promise.all([server.ids(), server.samples()])
      const kept = sample.map((e): KeptEvent => ({
        id: e.id,
        source: e.source,
        type: e.type,
        seqnum: e.seqnum,
        data: e.data_base64 === undefined ? undefined : new Uint8Array(Buffer.from(e.data_base64, "base64"))
      }))
      return { ids, kept }
    },
    catch: (error) => new Error(`reading what the ingest server kept: ${error instanceof Error ? error.message : String(error)}`)
  }).pipe(Effect.orDie)

/** Checks what the server kept against `emitted`, with the sample the server was started with. */
export const verifyDelivery = (
  server: IngestServerProcess,
  verifyAll: boolean,
  emitted: ReadonlyMap<string, Emitted>,
  duplicates: number,
  unacknowledgedSends: ReadonlyMap<string, number>
) =>
  Effect.map(serverRecord(server), ({ ids, kept }) => {
    const oneIn = verifyAll ? 1 : sampleOneIn
    return verify({ emitted, received: ids, duplicates, unacknowledgedSends, kept, sampleOneIn: oneIn, inSample: (id) => inSample(id, oneIn) })
  })
