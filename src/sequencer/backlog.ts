/**
 * The emits in the write queue, in queue order, for the Sequencer's watchdog: the Queue cannot be
 * looked into past its head. Committers take from the front, so what they took is dropped from
 * the front too, and the backlog holds no more than the queue (plus what was just taken).
 */

/** `settled`: a committer took the entry, or it is answered already. */
export const makeBacklog = <A>(settled: (item: A) => boolean) => {
  let items: Array<A> = []
  let head = 0
  return {
    push: (item: A) => void items.push(item),
    /** The oldest entry still queued and unanswered; drops what is before it. */
    first: (): A | undefined => {
      while (head < items.length && settled(items[head]!)) head++
      if (head === items.length) {
        items = []
        head = 0
      } else if (head > 1024 && head * 2 > items.length) {
        items = items.slice(head)
        head = 0
      }
      return items[head]
    }
  }
}
