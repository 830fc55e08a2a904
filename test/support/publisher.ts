/** Publishers over a ControlledStore, for the Publisher's tests. */
import { Clock, Context, Effect, Layer, Scope } from "effect"
import * as Config from "../../src/Config.ts"
import * as Event from "../../src/Event.ts"
import { Publisher, type PublisherOptions } from "../../src/Publisher.ts"
import type { NewEvent, StoredEvent } from "../../src/Store.ts"
import { ScriptedTransport } from "../../src/testing/ScriptedTransport.ts"
import type { Transport } from "../../src/Transport.ts"
import * as ControlledStore from "./ControlledStore.ts"

const prepare = (n: number, bytes = 16): NewEvent => {
  const event = Event.prepare(
    { source: "billing", type: `t${n % 2}`, data: new Uint8Array(bytes).fill(n & 0xff) },
    { emitterName: "test", maxEventBytes: 1 << 20, now: 0 }
  )
  if (!("payload" in event)) throw new Error(event.message)
  return event
}

/** A Publisher over a ControlledStore and the given Transport (its other services exposed in `context`). */
export const setupOver = <T>(transport: Layer.Layer<Transport | T, unknown>, overrides: Partial<PublisherOptions> = {}, extra: Layer.Layer<never> = Layer.empty) =>
  Effect.gen(function*() {
    const control = yield* ControlledStore.make
    // Rows are committed as at setup time (0 under TestClock) with a minute of lease.
    const t0 = yield* Clock.currentTimeMillis
    const scope = yield* Scope.make()
    const context = yield* Layer.buildWithScope(
      Publisher.layer({ ...Config.defaults, publishLingerMs: 0, deleteLingerMs: 0, ...overrides }).pipe(
        Layer.provideMerge(transport),
        Layer.provide(ControlledStore.layer(control)),
        Layer.provide(extra)
      ),
      scope
    )
    const publisher = Context.get(context, Publisher)
    /** Commits `n` events and returns them as the write path hands them off. */
    const commit = (n: number, bytes?: number) =>
      Effect.gen(function*() {
        const events = Array.from({ length: n }, (_, i) => prepare(i, bytes))
        const appended = yield* control.store.append(events, { now: t0, nextAttemptAt: t0 + 60_000 })
        return events.map((e, i): StoredEvent => ({ ...e, rowId: appended[i]!.rowId, seq: appended[i]!.seq, createdAt: t0, attempts: 0, leaseUntil: t0 + 60_000 }))
      })
    const backlog = Effect.map(control.store.stats, (s) => s.backlog)
    return { context, control, scope, publisher, commit, backlog }
  })

/** A Publisher over a ControlledStore and a ScriptedTransport (`script`). */
export const setup = (overrides: Partial<PublisherOptions> = {}, extra: Layer.Layer<never> = Layer.empty) =>
  Effect.map(setupOver(ScriptedTransport.layer(), overrides, extra), (parts) => ({ ...parts, script: Context.get(parts.context, ScriptedTransport) }))
