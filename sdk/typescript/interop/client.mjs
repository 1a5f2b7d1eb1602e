// Interop client: the official x402 TypeScript SDK (`@x402/fetch` over `@x402/core`) with
// nanogate's Nano scheme pays one URL and prints what came back as one JSON line. Run by
// tests/tests/sdk_interop.rs; the settings come from the environment:
//
// NANOGATE_PAYER_KEY (64 hex), NANOGATE_RPC_URL, NANOGATE_NETWORK, NANOGATE_MAX_RAW (the most
// the client may pay), NANOGATE_HOST (optional Host header), and the URL as the argument.
import { x402Client } from "@x402/core/client";
import { wrapFetchWithPayment, decodePaymentResponseHeader } from "@x402/fetch";
import { ExactNanoScheme } from "../dist/index.js";

const env = process.env;
const network = env.NANOGATE_NETWORK;
const client = new x402Client()
  .register(network, new ExactNanoScheme({ privateKey: env.NANOGATE_PAYER_KEY, rpcUrl: env.NANOGATE_RPC_URL }))
  // XNO is not one of the SDK's default assets: allow it, capped.
  .setSpendControls({ allowedAssets: [{ network, asset: "XNO", maxAmountPerPayment: env.NANOGATE_MAX_RAW }] });
const pay = wrapFetchWithPayment(fetch, client);
const headers = env.NANOGATE_HOST ? { host: env.NANOGATE_HOST } : {};
const resp = await pay(process.argv[2], { headers });
const receipt = resp.headers.get("payment-response");
console.log(
  JSON.stringify({
    status: resp.status,
    body: await resp.text(),
    paymentResponse: receipt ? decodePaymentResponseHeader(receipt) : null,
  }),
);
