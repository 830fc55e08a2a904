/**
 * An in-memory Store with the semantics of the PostgreSQL one, for unit tests (ours and users').
 * Nothing survives the layer. Every operation runs in one synchronous step, so each is atomic
 * and concurrent claims are disjoint by construction, as `FOR UPDATE SKIP LOCKED` makes them.
 */
import { Effect, Layer, Option } from "effect"
import type {
  Appended,
  ClaimOptions,
  DeadLetter,
  DeadLetterEntry,
  DeadLetterFilter,
  EventRecord,
  ExpireOptions,
  ExpiredCount,
  NewEvent,
  SourceTypeCount,
  StoredEvent,
  StoreStats
} from "../Store.ts"
import { Store } from "../Store.ts"

interface Row extends EventRecord {
  nextAttemptAt: number
  attempts: number
  lastError: string | null
}

interface DeadRow {
  readonly row: Row
  readonly deadLetteredAt: number
  readonly code: string
  readonly reason: string
}

const keyOf = (source: string, type: string) => JSON.stringify([source, type])

const byKey = (a: { source: string; type: string }, b: { source: string; type: string }) =>
  a.source < b.source ? -1 : a.source > b.source ? 1 : a.type < b.type ? -1 : a.type > b.type ? 1 : 0

const byId = (a: bigint, b: bigint) => (a < b ? -1 : a > b ? 1 : 0)

const matches = (filter: DeadLetterFilter) => (dead: DeadRow) =>
  (filter.source === undefined || dead.row.source === filter.source) &&
  (filter.type === undefined || dead.row.type === filter.type) &&
  (filter.since === undefined || dead.deadLetteredAt >= filter.since) &&
  (filter.until === undefined || dead.deadLetteredAt < filter.until)

const toStored = (row: Row): StoredEvent => ({
  rowId: row.rowId,
  eventId: row.eventId,
  source: row.source,
  type: row.type,
  seq: row.seq,
  payload: row.payload,
  createdAt: row.createdAt,
  attempts: row.attempts,
  leaseUntil: row.nextAttemptAt
})

/** Builds a fresh, empty Store. */
export const make: Effect.Effect<Store["Service"]> = Effect.sync(() => {
  const rows = new Map<bigint, Row>()
  const sequences = new Map<string, bigint>()
  const deadLetters = new Map<bigint, DeadRow>()
  let nextRowId = 1n

  const selectDeadLetters = (filter: DeadLetterFilter): Array<DeadRow> => {
    const selected = Array.from(deadLetters.values())
      .filter(matches(filter))
      .sort((a, b) => a.deadLetteredAt - b.deadLetteredAt || byId(a.row.rowId, b.row.rowId))
    return filter.limit === undefined ? selected : selected.slice(0, Math.max(0, filter.limit))
  }

  const moveToDeadLetters = (row: Row, deadLetteredAt: number, code: string, reason: string) => {
    rows.delete(row.rowId)
    deadLetters.set(row.rowId, { row, deadLetteredAt, code, reason })
  }

  const append = (events: ReadonlyArray<NewEvent>, options: { readonly now: number; readonly nextAttemptAt: number }) =>
    Effect.sync(() =>
      events.map((event): Appended => {
        const key = keyOf(event.source, event.type)
        const seq = (sequences.get(key) ?? 0n) + 1n
        sequences.set(key, seq)
        const rowId = nextRowId++
        rows.set(rowId, {
          rowId,
          eventId: event.eventId,
          source: event.source,
          type: event.type,
          seq,
          payload: event.payload.slice(),
          createdAt: options.now,
          nextAttemptAt: options.nextAttemptAt,
          attempts: 0,
          lastError: null
        })
        return { rowId, eventId: event.eventId, seq }
      })
    ).pipe(Effect.withSpan("MemoryStore.append"))

  const lookup = (eventIds: ReadonlyArray<string>, nextAttemptAt: number) =>
    Effect.sync(() => {
      const wanted = new Set(eventIds)
      const found: Array<Appended> = []
      for (const row of rows.values()) {
        if (row.nextAttemptAt === nextAttemptAt && wanted.has(row.eventId)) found.push({ rowId: row.rowId, eventId: row.eventId, seq: row.seq })
      }
      return found
    })

  const delete_ = (rowIds: ReadonlyArray<bigint>) =>
    Effect.sync(() => {
      let deleted = 0
      for (const rowId of rowIds) if (rows.delete(rowId)) deleted++
      return deleted
    })

  const claim = (options: ClaimOptions) =>
    Effect.sync(() => {
      const due = Array.from(rows.values())
        .filter((row) => row.nextAttemptAt <= options.now)
        .sort((a, b) => a.nextAttemptAt - b.nextAttemptAt || byId(a.rowId, b.rowId))
        .slice(0, Math.max(0, options.limit))
      for (const row of due) {
        const lease = Math.min(options.leaseBaseMs * 2 ** Math.min(row.attempts, 60), options.leaseMaxMs)
        row.nextAttemptAt = options.now + lease
        row.attempts += 1
      }
      return due.map(toStored)
    }).pipe(Effect.withSpan("MemoryStore.claim"))

  const reschedule = (rowIds: ReadonlyArray<bigint>, nextAttemptAt: number, error: string, maxAttempts: number) =>
    Effect.sync(() => {
      for (const rowId of rowIds) {
        const row = rows.get(rowId)
        if (row !== undefined && row.attempts <= maxAttempts) {
          row.nextAttemptAt = nextAttemptAt
          row.lastError = error
        }
      }
    })

  const expire = (options: ExpireOptions) =>
    Effect.sync(() => {
      const doomed = Array.from(rows.values())
        .filter((row) => row.createdAt < options.olderThan)
        .sort((a, b) => a.createdAt - b.createdAt || byId(a.rowId, b.rowId))
        .slice(0, Math.max(0, options.limit))
      const counts = new Map<string, ExpiredCount>()
      for (const row of doomed) {
        if (options.deadLetter) {
          moveToDeadLetters(row, options.now, "expired", "not delivered before its time to live ran out")
        } else {
          rows.delete(row.rowId)
        }
        const key = keyOf(row.source, row.type)
        const count = counts.get(key)
        counts.set(key, { source: row.source, type: row.type, count: (count?.count ?? 0) + 1 })
      }
      return Array.from(counts.values()).sort(byKey)
    })

  const deadLetter = (entries: ReadonlyArray<DeadLetterEntry>, now: number) =>
    Effect.sync(() => {
      let moved = 0
      for (const entry of entries) {
        const row = rows.get(entry.rowId)
        if (row === undefined) continue
        moveToDeadLetters(row, now, entry.code, entry.reason)
        moved++
      }
      return moved
    })

  const listDeadLetters = (filter: DeadLetterFilter) =>
    Effect.sync(() =>
      selectDeadLetters(filter).map(({ code, deadLetteredAt, reason, row }): DeadLetter => ({
        ...toStored(row),
        deadLetteredAt,
        code,
        reason
      }))
    )

  const replayDeadLetters = (filter: DeadLetterFilter, now: number) =>
    Effect.sync(() => {
      const selected = selectDeadLetters(filter)
      for (const { row } of selected) {
        deadLetters.delete(row.rowId)
        rows.set(row.rowId, { ...row, createdAt: now, nextAttemptAt: now, attempts: 0, lastError: null })
      }
      return selected.length
    })

  const purgeDeadLetters = (filter: DeadLetterFilter) =>
    Effect.sync(() => {
      const selected = selectDeadLetters(filter)
      for (const { row } of selected) deadLetters.delete(row.rowId)
      return selected.length
    })

  const stats = Effect.sync((): StoreStats => {
    let oldest: number | undefined
    let payloadBytes = 0
    for (const row of rows.values()) {
      payloadBytes += row.payload.byteLength
      if (oldest === undefined || row.createdAt < oldest) oldest = row.createdAt
    }
    return {
      backlog: rows.size,
      oldestCreatedAt: Option.fromUndefinedOr(oldest),
      payloadBytes,
      deadLetters: deadLetters.size,
      exact: true,
      tableBytes: payloadBytes,
      deadTuples: 0
    }
  })

  const countBySourceType = Effect.sync(() => {
    const counts = new Map<string, SourceTypeCount>()
    for (const row of rows.values()) {
      const key = keyOf(row.source, row.type)
      const current = counts.get(key)
      counts.set(key, {
        source: row.source,
        type: row.type,
        count: (current?.count ?? 0) + 1,
        oldestCreatedAt: Math.min(current?.oldestCreatedAt ?? Infinity, row.createdAt)
      })
    }
    return Array.from(counts.values()).sort(byKey)
  })

  return Store.of({
    append,
    lookup,
    delete: delete_,
    claim,
    reschedule,
    expire,
    deadLetter,
    listDeadLetters,
    replayDeadLetters,
    purgeDeadLetters,
    stats,
    countBySourceType
  })
})

/** A fresh in-memory Store per layer build. */
export const layer: Layer.Layer<Store> = Layer.effect(Store, make)
