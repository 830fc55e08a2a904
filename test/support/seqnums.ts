/** What the reference ingest server received, per (source, type): the seqnums, for gap checks. */

/** Per key ("source type"), the seqnums of the first delivery of each id, sorted. */
export const seqnumsByKey = (events: ReadonlyArray<{ id: string; source: string; type: string; seqnum: string | undefined }>) => {
  const first = new Map<string, (typeof events)[number]>()
  for (const e of events) if (!first.has(e.id)) first.set(e.id, e)
  const byKey = new Map<string, Array<number>>()
  for (const e of first.values()) {
    const key = `${e.source} ${e.type}`
    const list = byKey.get(key)
    if (list === undefined) byKey.set(key, [Number(e.seqnum)])
    else list.push(Number(e.seqnum))
  }
  for (const list of byKey.values()) list.sort((a, b) => a - b)
  return byKey
}

export const oneToN = (n: number) => Array.from({ length: n }, (_, i) => i + 1)
