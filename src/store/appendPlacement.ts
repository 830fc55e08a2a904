/**
 * Which returned row belongs to which event of an appended batch, as pure functions over data.
 *
 * PostgreSQL does not promise that `INSERT … RETURNING` answers in the order of the input, so a
 * row is never matched to its event by position. Instead the numbering says it: within one
 * (source, type) the batch's seqs are consecutive and follow the input order, so a row's seq
 * minus its key's lowest seq is the event's rank within its key.
 */

interface Keyed {
  readonly source: string
  readonly type: string
}

/** Whether every event of the batch has the same (source, type): the common case under load. */
export const isOneKey = (events: ReadonlyArray<Keyed>): boolean => {
  const { source, type } = events[0]!
  for (let i = 1; i < events.length; i++) {
    if (events[i]!.source !== source || events[i]!.type !== type) return false
  }
  return true
}

export interface BatchKey {
  readonly source: string
  readonly type: string
  /** The batch indexes of its events, in input order: the first gets the key's lowest seq. */
  readonly events: ReadonlyArray<number>
}

/** A multi-key batch numbered the way the append statement takes it. */
export interface KeyNumbering {
  /** The distinct keys in order of first appearance; key number k (from 1) is `keys[k - 1]`. */
  readonly keys: ReadonlyArray<BatchKey>
  /** Each event's key number (from 1). */
  readonly keyOf: ReadonlyArray<number>
  /** Each event's rank within its key (from 1). */
  readonly rank: ReadonlyArray<number>
  /** A key's number by name (`keyName`). */
  readonly byName: ReadonlyMap<string, number>
}

/** One string per (source, type); NUL cannot occur in a PostgreSQL text value. */
const keyName = (source: string, type: string) => `${source}\u0000${type}`

export const numberByKey = (events: ReadonlyArray<Keyed>): KeyNumbering => {
  const keys: Array<{ source: string; type: string; events: Array<number> }> = []
  const byName = new Map<string, number>()
  const keyOf = new Array<number>(events.length)
  const rank = new Array<number>(events.length)
  events.forEach(({ source, type }, i) => {
    const name = keyName(source, type)
    let number = byName.get(name)
    if (number === undefined) {
      keys.push({ source, type, events: [] })
      byName.set(name, number = keys.length)
    }
    const key = keys[number - 1]!
    key.events.push(i)
    keyOf[i] = number
    rank[i] = key.events.length
  })
  return { keys, keyOf, rank, byName }
}

/** The lowest seq among rows (0n for none). */
const lowestSeq = (rows: ReadonlyArray<{ readonly seq: bigint }>): bigint => {
  let lowest = rows.length > 0 ? rows[0]!.seq : 0n
  for (const row of rows) if (row.seq < lowest) lowest = row.seq
  return lowest
}

/**
 * The rows of a one-key batch of `count` events, each at its event's index: event i has the
 * i-th lowest seq. `undefined` where no row answered (the statement would be broken).
 */
export const placeOneKey = <R extends { readonly seq: bigint }>(count: number, rows: ReadonlyArray<R>): Array<R | undefined> => {
  const placed = new Array<R | undefined>(count)
  const lowest = lowestSeq(rows)
  for (const row of rows) {
    const index = Number(row.seq - lowest)
    if (index < count) placed[index] = row
  }
  return placed
}

/**
 * The rows of a multi-key batch, each at its event's index: a row's (source, type) names its
 * key, and its seq minus the key's lowest seq is its rank within the key.
 */
export const placeByKey = <R extends Keyed & { readonly seq: bigint }>(
  numbering: KeyNumbering,
  rows: ReadonlyArray<R>
): Array<R | undefined> => {
  const placed = new Array<R | undefined>(numbering.keyOf.length)
  const keyOfRow = rows.map((row) => numbering.byName.get(keyName(row.source, row.type)))
  const lowest = new Array<bigint | undefined>(numbering.keys.length + 1)
  rows.forEach((row, r) => {
    const key = keyOfRow[r]
    if (key !== undefined && (lowest[key] === undefined || row.seq < lowest[key])) lowest[key] = row.seq
  })
  rows.forEach((row, r) => {
    const key = keyOfRow[r]
    if (key === undefined) return
    const index = numbering.keys[key - 1]!.events[Number(row.seq - lowest[key]!)]
    if (index !== undefined) placed[index] = row
  })
  return placed
}

/** The first index with no row, or -1 when every event has one. */
export const firstUnplaced = (placed: ReadonlyArray<unknown>): number => {
  for (let i = 0; i < placed.length; i++) if (placed[i] === undefined) return i
  return -1
}
