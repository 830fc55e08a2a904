/**
 * "Take what waits, linger, take again": the one batching routine of the library. The Publisher's
 * dispatcher (count and request bytes), its delete coalescer (count) and the Sequencer's committers
 * (rows) all batch a bounded Queue with it.
 *
 * A batch is filled without waiting as far as its limits allow; if it is not full yet and a linger
 * is set, the routine sleeps once and fills again. This is the hot path: one blocking take for the
 * first item, synchronous takes for the rest, no Effect step per item.
 */
import { Effect, Exit, Queue } from "effect"

export interface BatchLimits<A> {
  /** A batch is full once its weight reaches this (an item may overshoot: it is never split). */
  readonly maxWeight: number
  /** An item's weight (absent: 1, the batch counts items). */
  readonly weight?: ((item: A) => number) | undefined
  /**
   * A byte budget: an item that would take the batch past `max` is held back as the first item of
   * the next batch (the first item of a batch is always taken).
   */
  readonly bytes?: {
    readonly max: number
    /** Bytes of the batch before any item (framing). */
    readonly overhead: number
    readonly of: (item: A) => number
  } | undefined
  /** How long to wait for more once the queue is empty and the batch is not full (0: never). */
  readonly lingerMs: number
}

export interface Batch<A> {
  readonly items: Array<A>
  weight: number
  bytes: number
  /** Taken from the queue but over the byte budget: hand it to the next `take`. */
  held: A | undefined
}

export const empty = <A>(limits: BatchLimits<A>): Batch<A> => ({
  items: [],
  weight: 0,
  bytes: limits.bytes?.overhead ?? 0,
  held: undefined
})

export const isFull = <A>(limits: BatchLimits<A>, batch: Batch<A>): boolean =>
  batch.held !== undefined || batch.weight >= limits.maxWeight

/** Adds `item` unless it would break the byte budget of a non-empty batch (then it is held). */
const add = <A>(limits: BatchLimits<A>, batch: Batch<A>, item: A): void => {
  const bytes = limits.bytes
  if (bytes !== undefined) {
    const size = bytes.of(item)
    if (batch.items.length > 0 && batch.bytes + size > bytes.max) {
      batch.held = item
      return
    }
    batch.bytes += size
  }
  batch.items.push(item)
  batch.weight += limits.weight === undefined ? 1 : limits.weight(item)
}

/** Takes what is waiting, without blocking, until the batch is full or the queue is empty (or ended). */
export const fill = <A, E>(queue: Queue.Dequeue<A, E>, limits: BatchLimits<A>, batch: Batch<A>): Batch<A> => {
  while (!isFull(limits, batch)) {
    const next = Queue.takeUnsafe(queue)
    if (next === undefined || Exit.isFailure(next)) break
    add(limits, batch, next.value)
  }
  return batch
}

/**
 * Waits for a first item (or starts with `first`, an item held back by the previous batch), fills
 * the batch, and lingers once if it is not full. Fails as `Queue.take` does (e.g. an ended queue).
 */
export const take = <A, E>(queue: Queue.Dequeue<A, E>, limits: BatchLimits<A>, first?: A): Effect.Effect<Batch<A>, E> => {
  const start = (item: A) => {
    const batch = empty(limits)
    add(limits, batch, item)
    fill(queue, limits, batch)
    if (isFull(limits, batch) || limits.lingerMs <= 0) return Effect.succeed(batch)
    return Effect.map(Effect.sleep(limits.lingerMs), () => fill(queue, limits, batch))
  }
  return first === undefined ? Effect.flatMap(Queue.take(queue), start) : start(first)
}
