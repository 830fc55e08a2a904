/**
 * The CloudEvents 1.0 type system, checked on the emit hot path. Each check answers the rule the
 * value breaks, or `undefined`: input is refused, never rewritten (a lone surrogate would become
 * U+FFFD in UTF-8, `Date.parse` rolls 2026-02-30 over to March 2, `JSON.stringify` turns NaN into
 * null and a Map into `{}`).
 *
 * Strings are scanned once with `charCodeAt`; the loop over printable ASCII, the common case, does
 * one comparison per character and leaves the rest to a slower path from the first other unit.
 */

const hex = (c: number) => `U+${c.toString(16).toUpperCase().padStart(4, "0")}`

const isControl = (c: number) => c < 0x20 || (c >= 0x7f && c <= 0x9f)

/** U+FDD0–U+FDEF and the last two code points of every plane (U+FFFE, U+FFFF, U+1FFFE, …). */
const isNoncharacter = (cp: number) => (cp >= 0xfdd0 && cp <= 0xfdef) || (cp & 0xfffe) === 0xfffe

/** The rest of `stringRule`, from the first unit outside printable ASCII. */
const stringRuleFrom = (s: string, from: number, text: boolean): string | undefined => {
  for (let i = from; i < s.length; i++) {
    const c = s.charCodeAt(i)
    if (c < 0x7f && c >= 0x20) continue
    if (isControl(c)) {
      if (text) continue
      return `must not contain control characters (${hex(c)} at index ${i})`
    }
    let cp = c
    if (c >= 0xd800 && c <= 0xdfff) {
      const next = c <= 0xdbff && i + 1 < s.length ? s.charCodeAt(i + 1) : 0
      if (next < 0xdc00 || next > 0xdfff) return `must not contain unpaired surrogates (${hex(c)} at index ${i})`
      cp = ((c - 0xd800) << 10) + (next - 0xdc00) + 0x10000
      i++
    }
    if (!text && isNoncharacter(cp)) return `must not contain noncharacters (${hex(cp)} at index ${cp > 0xffff ? i - 1 : i})`
  }
  return undefined
}

/**
 * A CloudEvents String: Unicode without control characters (U+0000–U+001F, U+007F–U+009F),
 * noncharacters or unpaired surrogates.
 */
export const stringRule = (s: string): string | undefined => {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    if (c >= 0x7f || c < 0x20) return stringRuleFrom(s, i, false)
  }
  return undefined
}

/**
 * A text body (string `data`): well-formed Unicode, so that its UTF-8 bytes say exactly what the
 * caller passed. It is not a String attribute: newlines, tabs and other characters are its own.
 */
export const textRule = (s: string): string | undefined =>
  // Native and constant-time on a one-byte string; the scan only runs to say where the fault is.
  (s as string & { isWellFormed(): boolean }).isWellFormed() ? undefined : stringRuleFrom(s, 0, true)

// RFC 3986 characters, ASCII only: unreserved, sub-delims, ":" "@" "/" "?" (pchar, query,
// fragment), "#" once, "[" "]" in the authority only, "%" with two hex digits.
const uriChar = new Uint8Array(128)
for (const c of "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=:@/?") {
  uriChar[c.charCodeAt(0)] = 1
}
const isHex = (c: number) => (c >= 0x30 && c <= 0x39) || ((c | 0x20) >= 0x61 && (c | 0x20) <= 0x66)
const isAlpha = (c: number) => (c | 0x20) >= 0x61 && (c | 0x20) <= 0x7a
const isSchemeChar = (c: number) => isAlpha(c) || (c >= 0x30 && c <= 0x39) || c === 0x2b || c === 0x2d || c === 0x2e

const uriRuleIn = (s: string, absolute: boolean): string | undefined => {
  const what = absolute ? "an absolute URI (RFC 3986)" : "a URI-reference (RFC 3986)"
  // The first segment ends at ":" (then it is a scheme), "/", "?" or "#".
  let schemeEnd = -1
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    if (c === 0x3a) {
      schemeEnd = i
      break
    }
    if (c === 0x2f || c === 0x3f || c === 0x23) break
  }
  if (schemeEnd === 0 || (schemeEnd > 0 && !isAlpha(s.charCodeAt(0)))) return `must be ${what}: a scheme starts with a letter`
  for (let i = 1; i < schemeEnd; i++) {
    if (!isSchemeChar(s.charCodeAt(i))) return `must be ${what}: the scheme holds letters, digits, "+", "-" or "." only`
  }
  if (absolute && schemeEnd < 0) return `must be ${what}: it has no scheme`
  // The authority follows "//" at the start of the hier-part or relative part.
  const authorityStart = s.charCodeAt(schemeEnd + 1) === 0x2f && s.charCodeAt(schemeEnd + 2) === 0x2f ? schemeEnd + 3 : -1
  let authorityEnd = authorityStart
  if (authorityStart >= 0) {
    while (authorityEnd < s.length) {
      const c = s.charCodeAt(authorityEnd)
      if (c === 0x2f || c === 0x3f || c === 0x23) break
      authorityEnd++
    }
  }
  let fragment = false
  for (let i = schemeEnd + 1; i < s.length; i++) {
    const c = s.charCodeAt(i)
    if (c < 128 && uriChar[c] === 1) continue
    if (c === 0x25) {
      if (isHex(s.charCodeAt(i + 1)) && isHex(s.charCodeAt(i + 2))) {
        i += 2
        continue
      }
      return `must be ${what}: "%" at index ${i} is not followed by two hex digits`
    }
    if (c === 0x23 && !fragment) {
      fragment = true
      continue
    }
    if ((c === 0x5b || c === 0x5d) && i >= authorityStart && i < authorityEnd) continue
    const unit = c >= 0x20 && c < 0x7f ? `"${s[i]}"` : hex(c)
    return `must be ${what}: ${unit} at index ${i} must be percent-encoded`
  }
  return undefined
}

/** A CloudEvents URI-reference (RFC 3986 §4.1); the String rules come first, as they say more. */
export const uriReferenceRule = (s: string): string | undefined => {
  const rule = uriRuleIn(s, false)
  return rule === undefined ? undefined : stringRule(s) ?? rule
}

/** A CloudEvents URI: absolute, with a scheme (RFC 3986 §4.3). */
export const uriRule = (s: string): string | undefined => {
  const rule = uriRuleIn(s, true)
  return rule === undefined ? undefined : stringRule(s) ?? rule
}

/** An object literal (or `Object.create(null)`), not an array, Map or class instance. */
export const isPlainObject = (value: unknown): value is Record<string, unknown> => {
  if (typeof value !== "object" || value === null) return false
  const proto = Object.getPrototypeOf(value)
  return proto === Object.prototype || proto === null
}

const maxJsonDepth = 1000

const kindOf = (value: unknown): string => {
  if (typeof value !== "object" || value === null) return typeof value
  const name = (Object.getPrototypeOf(value) as { constructor?: { name?: unknown } } | null)?.constructor?.name
  return typeof name === "string" && name !== "" ? `a ${name}` : "an object with a prototype"
}

const jsonRuleAt = (value: unknown, path: string, ancestors: Array<object>): string | undefined => {
  switch (typeof value) {
    case "string":
    case "boolean":
      return undefined
    case "number":
      return Number.isFinite(value) ? undefined : `${path}: ${value} is not a JSON number`
    case "object": {
      if (value === null) return undefined
      if (ancestors.includes(value)) return `${path}: a cycle (the value contains itself)`
      if (ancestors.length >= maxJsonDepth) return `${path}: nested deeper than ${maxJsonDepth} levels`
      ancestors.push(value)
      const rule = Array.isArray(value) ? arrayRule(value, path, ancestors) : objectRule(value, path, ancestors)
      ancestors.pop()
      return rule
    }
    default:
      return `${path}: ${kindOf(value)} is not a JSON value`
  }
}

const arrayRule = (value: ReadonlyArray<unknown>, path: string, ancestors: Array<object>): string | undefined => {
  if (Object.getPrototypeOf(value) !== Array.prototype) return `${path}: ${kindOf(value)} is not a JSON value`
  for (let i = 0; i < value.length; i++) {
    const item = value[i]
    if (item === undefined) return `${path}[${i}]: undefined is not a JSON value`
    const rule = jsonRuleAt(item, `${path}[${i}]`, ancestors)
    if (rule !== undefined) return rule
  }
  return undefined
}

const objectRule = (value: object, path: string, ancestors: Array<object>): string | undefined => {
  if (!isPlainObject(value)) return `${path}: ${kindOf(value)} is not a JSON value (pass a plain object)`
  for (const key in value) {
    const item = value[key]
    // An undefined property is left out, as JSON.stringify does: an absent optional field.
    if (item === undefined) continue
    const rule = jsonRuleAt(item, `${path}.${key}`, ancestors)
    if (rule !== undefined) return rule
  }
  return undefined
}

/**
 * A JSON value as RFC 8259 defines it: null, booleans, finite numbers, strings, arrays and plain
 * objects of JSON values, without cycles; the answer names the path of the offending value.
 */
export const jsonRule = (value: unknown): string | undefined => jsonRuleAt(value, "data", [])

const daysInMonth = (year: number, month: number) =>
  month === 2 ? (year % 4 === 0 && (year % 100 !== 0 || year % 400 === 0) ? 29 : 28) : [4, 6, 9, 11].includes(month) ? 30 : 31

// RFC 3339 date-time, e.g. 2026-11-25T19:10:41.123Z or 2026-11-25T20:10:41+01:00
const rfc3339 = /^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?(?:[Zz]|[+-](\d{2}):(\d{2}))$/

/** An RFC 3339 date-time naming a real instant: no February 30, no hour 24. */
export const timeRule = (time: string): string | undefined => {
  const m = rfc3339.exec(time)
  if (m === null) return "must be an RFC 3339 date-time"
  const year = Number(m[1])
  const month = Number(m[2])
  const day = Number(m[3])
  const hour = Number(m[4])
  const minute = Number(m[5])
  const second = Number(m[6])
  if (month < 1 || month > 12) return `must be a real instant: there is no month ${m[2]}`
  if (day < 1 || day > daysInMonth(year, month)) return `must be a real instant: ${m[1]}-${m[2]} has no day ${m[3]}`
  if (hour > 23 || minute > 59) return `must be a real instant: there is no time ${m[4]}:${m[5]}`
  // A leap second cannot be represented exactly (epoch time has none): refused, not rounded.
  if (second > 59) return `must be a real instant: second ${m[6]} is not representable`
  if (m[8] !== undefined && (Number(m[8]) > 23 || Number(m[9]) > 59)) return `must be a real instant: offset ${m[8]}:${m[9]} is out of range`
  return undefined
}
