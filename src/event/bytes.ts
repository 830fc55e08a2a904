/**
 * Byte arrays for the per-event hot paths. A `new Uint8Array(n)` above 64 bytes gets a backing
 * store of its own (allocated, zeroed and tracked as external memory: about 0.8 µs for an event);
 * Node's Buffer pool hands out slices of a shared 8 KiB slab for sizes below 4 KiB (about
 * 0.1 µs). The answer is a plain Uint8Array view, so it compares and serializes like any other.
 * Like any pooled Buffer, a view keeps its slab alive while it lives; events are released in the
 * order they were made, so slabs are freed together.
 */
import { Buffer } from "node:buffer"

/** `n` bytes, not zeroed: the caller writes every one of them. */
export const allocBytes = (n: number): Uint8Array => {
  const b = Buffer.allocUnsafe(n)
  return new Uint8Array(b.buffer, b.byteOffset, n)
}
