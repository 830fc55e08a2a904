/** A Publisher over a ControlledStore and a ScriptedTransport, for the Publisher's unit tests (TestClock). */
import { Context, Effect, Layer, Scope } from "effect"
import * as Config from "../../src/Config.ts"
import * as Event from "../../src/Event.ts"
import { Publisher, type PublisherOptions } from "../../src/Publisher.ts"
import type { NewEvent, StoredEvent } from "../../src/Store.ts"
import { ScriptedTransport } from "../../src/testing/ScriptedTransport.ts"
import * as ControlledStore from "./ControlledStore.ts"

const prepare = (n: number, bytes = 16): NewEvent => {
  const event = Event.prepare(
    { source: "billing", type: `t${n % 2}`, data: new Uint8Array(bytes).fill(n & 0xff) },
    { emitterName: "test", maxEventBytes: 1 << 20, now: 0 }
  )
  if (!("payload" in event)) throw new Error(event.message)
  return event
}

export const setup = (overrides: Partial<PublisherOptions> = {}, extra: Layer.Layer<never> = Layer.empty) =>
  Effect.gen(function*() {
    const control = yield* ControlledStore.make
    const scope = yield* Scope.make()
    const context = yield* Layer.buildWithScope(
      Publisher.layer({ ...Config.defaults, publishLingerMs: 0, deleteLingerMs: 0, ...overrides }).pipe(
        Layer.provideMerge(ScriptedTransport.layer()),
        Layer.provide(ControlledStore.layer(control)),
        Layer.provide(extra)
      ),
      scope
    )
    const publisher = Context.get(context, Publisher)
    const script = Context.get(context, ScriptedTransport)
    /** Commits `n` events and returns them as the write path hands them off. */
    const commit = (n: number, bytes?: number) =>
      Effect.gen(function*() {
        const events = Array.from({ length: n }, (_, i) => prepare(i, bytes))
        const appended = yield* control.store.append(events, { now: 0, nextAttemptAt: 60_000 })
        return events.map((e, i): StoredEvent => ({ ...e, rowId: appended[i]!.rowId, seq: appended[i]!.seq, createdAt: 0, attempts: 0, leaseUntil: 60_000 }))
      })
    const backlog = Effect.map(control.store.stats, (s) => s.backlog)
    return { control, scope, publisher, script, commit, backlog }
  })
