// Nano primitives a payer needs: keys, addresses, state-block hashing and signing, work.
// State block hash = BLAKE2b-256 over a 32-byte preamble (6), account, previous,
// representative, balance (16 bytes big-endian) and link; signatures are Ed25519 with
// BLAKE2b-512 in place of SHA-512; work difficulty = little-endian u64 of
// BLAKE2b-64(work as 8 LE bytes || root).

import { eddsa } from "@noble/curves/abstract/edwards.js";
import { ed25519 } from "@noble/curves/ed25519.js";
import { blake2b } from "@noble/hashes/blake2.js";

const ALPHABET = "13456789abcdefghijkmnopqrstuwxyz";

// RFC 8032 clamping; noble keeps its own private, so it is spelled out here.
function clamp(bytes: Uint8Array): Uint8Array {
  bytes[0] &= 248;
  bytes[31] &= 127;
  bytes[31] |= 64;
  return bytes;
}

const signer = eddsa(ed25519.Point, (m: Uint8Array) => blake2b(m, { dkLen: 64 }), {
  adjustScalarBytes: clamp,
});

export function hexToBytes(hex: string): Uint8Array {
  if (!/^([0-9a-fA-F]{2})*$/.test(hex)) throw new Error(`not hex: ${hex}`);
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

export function bytesToHex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("").toUpperCase();
}

function toBigInt(bytes: Uint8Array): bigint {
  let n = 0n;
  for (const b of bytes) n = (n << 8n) | BigInt(b);
  return n;
}

function fromBigInt(n: bigint, length: number): Uint8Array {
  const out = new Uint8Array(length);
  for (let i = length - 1; i >= 0; i--) {
    out[i] = Number(n & 0xffn);
    n >>= 8n;
  }
  return out;
}

export function publicKey(privateKey: Uint8Array): Uint8Array {
  return signer.getPublicKey(privateKey);
}

/** Ed25519-BLAKE2b signature (64 bytes) of `message` (for Nano, a block hash). */
export function sign(privateKey: Uint8Array, message: Uint8Array): Uint8Array {
  return signer.sign(message, privateKey);
}

/** The private key at `index` of a 32-byte seed: BLAKE2b-256(seed || index as u32 BE). */
export function keyFromSeed(seed: Uint8Array, index: number): Uint8Array {
  const input = new Uint8Array(36);
  input.set(seed);
  new DataView(input.buffer).setUint32(32, index, false);
  return blake2b(input, { dkLen: 32 });
}

function base32(n: bigint, chars: number): string {
  let s = "";
  for (let i = 0; i < chars; i++) {
    s = ALPHABET[Number(n & 31n)] + s;
    n >>= 5n;
  }
  return s;
}

/** `nano_` address of a 32-byte public key. */
export function address(key: Uint8Array): string {
  const check = blake2b(key, { dkLen: 5 }).reverse();
  return "nano_" + base32(toBigInt(key), 52) + base32(toBigInt(check), 8);
}

/** The public key of a `nano_`/`xrb_` address; throws if it is not one. */
export function decodeAddress(addr: string): Uint8Array {
  const body = addr.startsWith("nano_") ? addr.slice(5) : addr.startsWith("xrb_") ? addr.slice(4) : null;
  if (body === null || body.length !== 60 || [...body].some((c) => !ALPHABET.includes(c))) {
    throw new Error(`not a Nano address: ${addr}`);
  }
  let n = 0n;
  for (const c of body.slice(0, 52)) n = (n << 5n) | BigInt(ALPHABET.indexOf(c));
  if (n >> 256n) throw new Error(`not a Nano address (padding bits set): ${addr}`);
  const key = fromBigInt(n, 32);
  if (address(key).slice(-8) !== body.slice(52)) throw new Error(`not a Nano address (bad checksum): ${addr}`);
  return key;
}

/** Hash of a state block. */
export function blockHash(
  account: Uint8Array,
  previous: Uint8Array,
  representative: Uint8Array,
  balance: bigint,
  link: Uint8Array,
): Uint8Array {
  const input = new Uint8Array(176);
  input[31] = 6;
  input.set(account, 32);
  input.set(previous, 64);
  input.set(representative, 96);
  input.set(fromBigInt(balance, 16), 128);
  input.set(link, 144);
  return blake2b(input, { dkLen: 32 });
}

/** The difficulty `work` reaches on `root`. */
export function workDifficulty(root: Uint8Array, work: bigint): bigint {
  const input = new Uint8Array(40);
  new DataView(input.buffer).setBigUint64(0, work, true);
  input.set(root, 8);
  const d = blake2b(input, { dkLen: 8 });
  return new DataView(d.buffer, d.byteOffset, 8).getBigUint64(0, true);
}

/** Local proof of work, one thread: only sensible for low thresholds (test networks). */
export function generateWork(root: Uint8Array, threshold: bigint): bigint {
  let work = 0n;
  while (workDifficulty(root, work) < threshold) work = (work + 1n) & 0xffffffffffffffffn;
  return work;
}
