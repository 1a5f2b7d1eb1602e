// Interop resource server: Express with the official x402 TypeScript SDK's payment middleware
// (`@x402/express`) and nanogate's Nano server scheme, using a nanogate sidecar as its
// facilitator. Run by tests/tests/sdk_interop.rs; the settings come from the environment:
//
// NANOGATE_FACILITATOR_URL, NANOGATE_FACILITATOR_TOKEN, NANOGATE_NETWORK, NANOGATE_PAY_TO,
// NANOGATE_PRICE_RAW, NANOGATE_PORT. `GET /paid` costs the price; `GET /healthz` is free.
import express from "express";
import { HTTPFacilitatorClient, x402ResourceServer } from "@x402/core/server";
import { paymentMiddleware } from "@x402/express";
import { ExactNanoServerScheme } from "../dist/index.js";

const env = process.env;
const auth = { Authorization: `Bearer ${env.NANOGATE_FACILITATOR_TOKEN}` };
const facilitator = new HTTPFacilitatorClient({
  url: env.NANOGATE_FACILITATOR_URL,
  createAuthHeaders: async () => ({ verify: auth, settle: auth }),
});
const server = new x402ResourceServer(facilitator).register(env.NANOGATE_NETWORK, new ExactNanoServerScheme());
const routes = {
  "GET /paid": {
    accepts: {
      scheme: "exact",
      network: env.NANOGATE_NETWORK,
      payTo: env.NANOGATE_PAY_TO,
      price: { asset: "XNO", amount: env.NANOGATE_PRICE_RAW },
    },
    description: "interop test resource",
  },
};
const app = express();
app.use(paymentMiddleware(routes, server));
app.get("/paid", (_req, res) => res.json({ paid: true }));
app.get("/healthz", (_req, res) => res.json({ ok: true }));
app.listen(Number(env.NANOGATE_PORT), "127.0.0.1", () => console.log(`listening on ${env.NANOGATE_PORT}`));
