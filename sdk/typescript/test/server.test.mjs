// The resource-server scheme: prices, and the facilitator's work fields in every offer.
import { test } from "node:test";
import assert from "node:assert/strict";
import { ExactNanoServerScheme, xnoToRaw } from "../dist/index.js";

test("XNO prices convert to raw exactly", () => {
  assert.equal(xnoToRaw("0.001"), "1000000000000000000000000000");
  assert.equal(xnoToRaw("1"), "1000000000000000000000000000000");
  assert.equal(xnoToRaw("0.000000000000000000000000000001 XNO"), "1");
  assert.equal(xnoToRaw(0.5), "500000000000000000000000000000");
  for (const bad of ["$0.01", "0", "-1", "1e3", "0.0000000000000000000000000000001", "01", ""]) {
    assert.throws(() => xnoToRaw(bad), undefined, bad);
  }
});

test("parsePrice takes XNO money or a raw XNO amount", async () => {
  const s = new ExactNanoServerScheme();
  assert.deepEqual(await s.parsePrice("0.001", "nano:mainnet"), {
    asset: "XNO",
    amount: "1000000000000000000000000000",
    extra: {},
  });
  assert.deepEqual(await s.parsePrice({ asset: "xno", amount: "42" }, "nano:mainnet"), {
    asset: "XNO",
    amount: "42",
    extra: {},
  });
  await assert.rejects(s.parsePrice({ asset: "USDC", amount: "42" }, "nano:mainnet"));
  await assert.rejects(s.parsePrice({ asset: "XNO", amount: "0.5" }, "nano:mainnet"));
});

test("offers carry the facilitator's work fields; the route's own win", async () => {
  const s = new ExactNanoServerScheme();
  const kind = { extra: { asset: "XNO", workThreshold: "ffc0000000000000", work: "optional" } };
  const req = { scheme: "exact", network: "nano:devnet", asset: "XNO", amount: "1", payTo: "nano_x", maxTimeoutSeconds: 60, extra: {} };
  const out = await s.enhancePaymentRequirements(req, kind, []);
  assert.deepEqual(out.extra, { work: "optional", workThreshold: "ffc0000000000000" });
  const own = await s.enhancePaymentRequirements({ ...req, extra: { work: "required" } }, kind, []);
  assert.equal(own.extra.work, "required");
  const bare = await s.enhancePaymentRequirements(req, {}, []);
  assert.deepEqual(bare.extra, {});
});
