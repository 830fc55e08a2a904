/**
 * The persistence port. Every implementation (PostgreSQL, embedded PGlite, in-memory) passes the
 * same contract suite (test/StoreContract.ts). Times are epoch milliseconds passed in by the caller,
 * read from Effect's Clock, so tests drive them with TestClock and the database's clock never matters.
 */
import { Context, type Effect, type Option } from "effect"
import type { StoreError } from "./Errors.ts"

/** An event ready to be written: its CloudEvent is already encoded (without `seqnum`). */
export interface NewEvent {
  /** CloudEvent id (UUID), fixed at emit time. */
  readonly eventId: string
  readonly source: string
  readonly type: string
  /** Encoded io.cloudevents.v1.CloudEvent, without the `seqnum` attribute. */
  readonly payload: Uint8Array
  /** The emit span (W3C traceparent), kept in memory so the delivery span can link to it; not a column. */
  readonly traceparent?: string | undefined
}

/** What `append` assigned to one input event. */
export interface Appended {
  /** Row identity in the events table. */
  readonly rowId: bigint
  readonly eventId: string
  /** Durable per-(source, type) sequence number, 1-based, gap-free, monotonic in commit order. */
  readonly seq: bigint
}

/** What every stored copy of an event holds, in the events table or the dead letters. */
export interface EventRecord {
  /** Row identity in the events table (a dead letter keeps it). */
  readonly rowId: bigint
  readonly eventId: string
  readonly source: string
  readonly type: string
  readonly seq: bigint
  readonly payload: Uint8Array
  readonly createdAt: number
}

/** A row of the events table. */
export interface StoredEvent extends EventRecord {
  /** Claims so far (the fast path does not count). */
  readonly attempts: number
  /**
   * Until when this process may send the row (epoch ms): the row's next_attempt_at, i.e. the first
   * lease for a new row and the claim's lease for a claimed one. After it another claimer may take
   * the row, so the publisher starts no send that could still be in flight then.
   */
  readonly leaseUntil: number
  /** The emit span, on the fast path only (rows read back from the table do not carry it). */
  readonly traceparent?: string | undefined
}

/** A row moved to the dead-letter table. */
export interface DeadLetter extends EventRecord {
  readonly deadLetteredAt: number
  readonly attempts: number
  /** Why: a PublishErrorCode name, a gRPC status name, "expired", "UNDECODABLE", … */
  readonly code: string
  readonly reason: string
}

export interface DeadLetterEntry {
  readonly rowId: bigint
  readonly code: string
  readonly reason: string
}

/** Selects dead letters; every field narrows. `limit` bounds one call (absent: every match). */
export interface DeadLetterFilter {
  readonly source?: string | undefined
  readonly type?: string | undefined
  /** deadLetteredAt >= since */
  readonly since?: number | undefined
  /** deadLetteredAt < until */
  readonly until?: number | undefined
  readonly limit?: number | undefined
}

export interface ClaimOptions {
  readonly now: number
  readonly limit: number
  /** The lease: next_attempt_at = now + min(leaseBaseMs * 2^attempts, leaseMaxMs), attempts = attempts + 1. */
  readonly leaseBaseMs: number
  readonly leaseMaxMs: number
}

export interface ExpireOptions {
  /** Rows with created_at < olderThan are expired. */
  readonly olderThan: number
  /** At most this many rows in one statement. */
  readonly limit: number
  /** Move them to the dead-letter table (code "expired") instead of deleting them. */
  readonly deadLetter: boolean
  readonly now: number
}

/** Rows expired by one `expire` call, per source and type. */
export interface ExpiredCount {
  readonly source: string
  readonly type: string
  readonly count: number
}

export interface StoreStats {
  /** Rows in the events table. */
  readonly backlog: number
  readonly oldestCreatedAt: Option.Option<number>
  /** Payload bytes pending (may be an estimate on large tables: see `exact`). */
  readonly payloadBytes: number
  readonly deadLetters: number
  /** False when backlog / payloadBytes are planner estimates (large tables). */
  readonly exact: boolean
  /**
   * Bytes the events table takes: heap, indexes, TOAST and every partition (PostgreSQL's
   * `pg_total_relation_size` over its partition tree); for the in-memory store, its payload bytes.
   */
  readonly tableBytes: number
  /**
   * Dead row versions in the events table that no vacuum has reclaimed yet, from PostgreSQL's
   * statistics (which lag a moment behind; 0 where none are kept, as in memory).
   */
  readonly deadTuples: number
}

/** Backlog per source and type, for `inspect`. */
export interface SourceTypeCount {
  readonly source: string
  readonly type: string
  readonly count: number
  readonly oldestCreatedAt: number
}

export class Store extends Context.Service<Store, {
  /**
   * Writes the events in ONE transaction and ONE insert statement and assigns their sequence
   * numbers. Answers in input order. `nextAttemptAt` is the first lease: the retransmitter leaves
   * the row alone until then, while the fast path delivers it.
   */
  readonly append: (
    events: ReadonlyArray<NewEvent>,
    options: { readonly now: number; readonly nextAttemptAt: number }
  ) => Effect.Effect<ReadonlyArray<Appended>, StoreError>
  /**
   * The rows an `append` with first lease `nextAttemptAt` wrote for these events: for an append
   * whose outcome is unknown (the connection was lost after the statement was sent). Until the
   * lease passes nobody claims or deletes those rows, so once that append has ended (the database
   * bounds it) an event not found was not committed. Answers in no particular order.
   */
  readonly lookup: (eventIds: ReadonlyArray<string>, nextAttemptAt: number) => Effect.Effect<ReadonlyArray<Appended>, StoreError>
  /** Deletes delivered rows; unknown ids are ignored. Returns how many rows were deleted. */
  readonly delete: (rowIds: ReadonlyArray<bigint>) => Effect.Effect<number, StoreError>
  /** Claims due rows (next_attempt_at <= now) with FOR UPDATE SKIP LOCKED, oldest first, and leases them. */
  readonly claim: (options: ClaimOptions) => Effect.Effect<ReadonlyArray<StoredEvent>, StoreError>
  /**
   * Moves the next attempt of rows to `nextAttemptAt` (the publisher releases the rows its full
   * queue refused: due now). Only rows claimed at most `maxAttempts` times are touched: a row a
   * retransmitter has claimed since keeps the claimer's lease, so a late release can never make a
   * row that is being sent due again (a second sender, a duplicate).
   */
  readonly reschedule: (
    rowIds: ReadonlyArray<bigint>,
    nextAttemptAt: number,
    error: string,
    maxAttempts: number
  ) => Effect.Effect<void, StoreError>
  /** Expires at most `limit` rows older than `olderThan`. Call again until it returns nothing. */
  readonly expire: (options: ExpireOptions) => Effect.Effect<ReadonlyArray<ExpiredCount>, StoreError>
  /** Moves rows to the dead-letter table with their code and reason, atomically. Returns how many moved. */
  readonly deadLetter: (entries: ReadonlyArray<DeadLetterEntry>, now: number) => Effect.Effect<number, StoreError>
  readonly listDeadLetters: (filter: DeadLetterFilter) => Effect.Effect<ReadonlyArray<DeadLetter>, StoreError>
  /**
   * Moves matching dead letters back into the events table with the same id and seq, due at `now`.
   * Their attempts and time to live start over (created_at = `now`), so expiry does not take them
   * straight back.
   */
  readonly replayDeadLetters: (filter: DeadLetterFilter, now: number) => Effect.Effect<number, StoreError>
  readonly purgeDeadLetters: (filter: DeadLetterFilter) => Effect.Effect<number, StoreError>
  /** Cheap enough to poll every few seconds on a table of a million rows. */
  readonly stats: Effect.Effect<StoreStats, StoreError>
  /** Backlog per source and type (a full aggregate: for operators, not for polling). */
  readonly countBySourceType: Effect.Effect<ReadonlyArray<SourceTypeCount>, StoreError>
}>()("durable-emitter/Store") {}
