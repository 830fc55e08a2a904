/**
 * The flush barrier. Each accepted event joins the current epoch; `flush` closes the epoch and waits
 * until every event of that epoch and of all earlier ones is resolved (delivered and deleted,
 * dead-lettered, or left to the retransmitter). Events accepted after the call do not delay it, so
 * flush completes under continuous load. Epochs only begin at flush calls: the map stays tiny.
 */
import { Deferred, Effect } from "effect"

export interface Barrier {
  /** The epoch an event accepted now joins. */
  readonly current: () => number
  readonly accepted: (epoch: number, n: number) => void
  readonly resolved: (epoch: number, n: number) => void
  /** Completes when everything accepted before the call is resolved. */
  readonly flush: Effect.Effect<void>
  /** Events accepted and not yet resolved. */
  readonly pending: () => number
}

export const make = (): Barrier => {
  let epoch = 0
  let total = 0
  const open = new Map<number, number>() // epoch -> unresolved events
  const waiters: Array<{ readonly epoch: number; readonly done: Deferred.Deferred<void> }> = []

  const oldestOpen = () => {
    let min = Infinity
    for (const [e, n] of open) if (n > 0 && e < min) min = e
    return min
  }

  const release = () => {
    const oldest = oldestOpen()
    for (let i = waiters.length - 1; i >= 0; i--) {
      const w = waiters[i]!
      if (w.epoch < oldest) {
        waiters.splice(i, 1)
        Deferred.doneUnsafe(w.done, Effect.void)
      }
    }
  }

  return {
    current: () => epoch,
    accepted: (e, n) => {
      open.set(e, (open.get(e) ?? 0) + n)
      total += n
    },
    resolved: (e, n) => {
      const left = (open.get(e) ?? 0) - n
      total -= n
      if (left > 0) {
        open.set(e, left)
      } else {
        open.delete(e)
        if (waiters.length > 0) release()
      }
    },
    flush: Effect.suspend(() => {
      const closing = epoch++
      if (oldestOpen() > closing) return Effect.void
      const done = Deferred.makeUnsafe<void>()
      waiters.push({ epoch: closing, done })
      return Deferred.await(done)
    }),
    pending: () => total
  }
}
