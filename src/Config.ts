/**
 * Every option of the emitter: its type, its default, its environment variable, and the rules
 * checked when the layer is built. `DurableEmitter.layer` reads them from the environment
 * (`DATABASE_URL`, `DURABLE_EMITTER_INGEST_URL`, `DURABLE_EMITTER_<OPTION>`);
 * `DurableEmitter.layerWith(options)` takes them from code.
 *
 * The options are declared once, in ./config/options.ts (kind, default, layer, doc); the kinds
 * of value in ./config/kinds.ts, the environment reader in ./config/env.ts, the resolution and
 * the rules between options in ./config/resolve.ts. This module is their public face.
 */
export { fromEnv } from "./config/env.ts"
export {
  defaults,
  type EmitterOptions,
  type EmitterOptionsInput,
  envName,
  nonNegativeDurations,
  type OptionName,
  optionName,
  type Part,
  positiveDurations,
  positiveInts,
  type ServicesOptionsInput
} from "./config/options.ts"
export { describe, describeChanged, leaseSlack, resolve } from "./config/resolve.ts"
