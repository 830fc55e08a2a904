/**
 * Where the write path hands committed events for delivery. The Publisher provides it; tests and
 * `retransmit`-only setups may provide another. Kept apart from the Publisher so the Sequencer does
 * not depend on delivery.
 */
import { Context, type Effect } from "effect"
import type { StoredEvent } from "./Store.ts"

export class Handoff extends Context.Service<Handoff, {
  /**
   * Takes committed events without waiting. Events that do not fit are left in the table for the
   * retransmitter, their rows released (due at once), counted, and warned about once per full episode.
   */
  readonly offer: (events: ReadonlyArray<StoredEvent>) => Effect.Effect<void>
}>()("durable-emitter/Handoff") {}
