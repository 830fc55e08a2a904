/**
 * Delivery observation shared by `e2e` and `drain`: the reference ingest server in its own process,
 * the emitter's table watched from a separate connection, and a recorder of answered requests.
 */
import { Effect } from "effect"
import { SqlClient } from "effect/sql"
import type { EmitReceipt } from "../src/Emitter.ts"
import { makeIngestServerProcess } from "../src/testing/IngestServerProcess.ts"
import { adminClient, pollUntil, Reservoir } from "./common.ts"
import { eventIdOf, type OnAnswer } from "./stack.ts"

/** The ingest server as a child process, closed with the scope. Keeps only ids (duplicate counts). */
export const ingestServer = makeIngestServerProcess({ record: "ids" })

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
const sampledId = (id: string) => id.charCodeAt(35) === zero

/**
 * Latencies of answered requests and of sampled events: receipt → delivery acknowledged (the
 * request that carried the event answered "delivered"), and emit start → acknowledged.
 * `onPair` sees each sampled emit start → ack as it is paired, with the ack's time (soak: per minute).
 */
export const makeRecorder = (onPair?: (emitToAckMs: number, ackAt: number) => void) => {
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

  const onReceipt = (receipt: EmitReceipt, startedAt: number, at: number) => {
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
    onReceipt,
    /** Forgets everything (after a warm-up). */
    reset: () => {
      request.clear()
      receiptToAck.clear()
      emitToAck.clear()
      receipts.clear()
      acks.clear()
      requests = delivered = rejected = 0
    },
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
