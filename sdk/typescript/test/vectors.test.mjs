// The Nano primitives and the client scheme against the repository's conformance vectors
// (tests/vectors/). A missing vector file fails the run: these tests never pass vacuously.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { ExactNanoScheme, nano } from "../dist/index.js";

const VECTORS = fileURLToPath(new URL("../../../tests/vectors/", import.meta.url));

function load(name) {
  const path = VECTORS + name;
  if (!existsSync(path)) throw new Error(`conformance vectors missing: ${path}`);
  return JSON.parse(readFileSync(path, "utf8"));
}

const NANO = load("nano-vectors.json");
const X402 = load("x402-vectors.json");

test("keys and addresses", () => {
  let checked = 0;
  for (const v of NANO.keys) {
    const pub = nano.publicKey(nano.hexToBytes(v.private_key));
    assert.equal(nano.bytesToHex(pub), v.public_key.toUpperCase(), v.id);
    assert.equal(nano.address(pub), v.address, v.id);
    assert.equal(nano.bytesToHex(nano.decodeAddress(v.address)), v.public_key.toUpperCase(), v.id);
    if (v.seed !== undefined) {
      const derived = nano.keyFromSeed(nano.hexToBytes(v.seed), v.index);
      assert.equal(nano.bytesToHex(derived), v.private_key.toUpperCase(), v.id);
    }
    checked++;
  }
  assert.ok(checked > 10);
});

test("invalid addresses are refused", () => {
  for (const v of NANO.addresses_invalid) {
    assert.throws(() => nano.decodeAddress(v.address), undefined, v.id);
  }
});

test("state blocks hash and sign", () => {
  let signed = 0;
  for (const v of NANO.blocks) {
    const b = v.block;
    if (b.type !== "state") continue;
    const hash = nano.blockHash(
      nano.decodeAddress(b.account),
      nano.hexToBytes(b.previous),
      nano.decodeAddress(b.representative),
      BigInt(b.balance),
      nano.hexToBytes(b.link),
    );
    assert.equal(nano.bytesToHex(hash), v.hash.toUpperCase(), v.id);
    if (v.private_key !== undefined && v.signature_from_private_key !== undefined) {
      const sig = nano.sign(nano.hexToBytes(v.private_key), hash);
      assert.equal(nano.bytesToHex(sig), v.signature_from_private_key.toUpperCase(), v.id);
      signed++;
    }
  }
  assert.ok(signed > 5);
});

test("work difficulty", () => {
  for (const v of NANO.work) {
    const d = nano.workDifficulty(nano.hexToBytes(v.root), BigInt("0x" + v.work));
    assert.equal(d, BigInt("0x" + v.difficulty), v.id);
  }
});

test("local work reaches the dev send threshold", () => {
  const threshold = BigInt("0x" + NANO.thresholds.dev.send);
  const root = new Uint8Array(32).map((_, i) => i);
  const work = nano.generateWork(root, threshold);
  assert.ok(nano.workDifficulty(root, work) >= threshold);
});

/** The x402 v2 sample payment, rebuilt by the scheme from the same ledger state. */
function sampleScheme() {
  const sample = X402.payment_payload_v2;
  const ledger = sample.ledger_assumptions;
  const expected = sample.object.payload.block;
  const calls = [];
  const fakeFetch = async (_url, init) => {
    const body = JSON.parse(init.body);
    calls.push(body);
    let answer;
    if (body.action === "account_info") {
      answer = {
        frontier: ledger.payer_frontier_before,
        balance: ledger.payer_balance_before,
        representative: expected.representative,
      };
    } else if (body.action === "work_generate") {
      answer = { work: expected.work };
    } else {
      throw new Error(`unexpected RPC ${body.action}`);
    }
    return new Response(JSON.stringify(answer));
  };
  const scheme = new ExactNanoScheme({ privateKey: ledger.payer_private_key, rpcUrl: "http://node.invalid", fetch: fakeFetch });
  const requirements = (extra) => ({ ...sample.object.accepted, extra });
  return { scheme, calls, expected, requirements };
}

test("builds the sample block with node work at the offered threshold", async () => {
  const { scheme, calls, expected, requirements } = sampleScheme();
  const out = await scheme.createPaymentPayload(2, requirements({ workThreshold: "ffc0000000000000" }));
  assert.equal(out.x402Version, 2);
  assert.deepEqual(out.payload.block, expected);
  assert.equal(calls.find((c) => c.action === "work_generate").difficulty, "ffc0000000000000");
});

test("without a threshold it asks for mainnet work", async () => {
  const { scheme, calls, requirements } = sampleScheme();
  await scheme.createPaymentPayload(2, requirements({}));
  assert.equal(calls.find((c) => c.action === "work_generate").difficulty, "fffffff800000000");
});

test("optional work is left to the seller", async () => {
  const { scheme, calls, expected, requirements } = sampleScheme();
  const out = await scheme.createPaymentPayload(2, requirements({ work: "optional" }));
  assert.equal(out.payload.block.work, "0000000000000000");
  assert.equal(out.payload.block.signature, expected.signature);
  assert.ok(!calls.some((c) => c.action === "work_generate"));
});

test("an underfunded payer is refused", async () => {
  const { scheme, requirements } = sampleScheme();
  const req = { ...requirements({}), amount: (10n ** 40n).toString() };
  await assert.rejects(scheme.createPaymentPayload(2, req));
});
