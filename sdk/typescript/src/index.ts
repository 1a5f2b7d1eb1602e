// Nano (XNO) `exact` schemes for the official x402 TypeScript SDK (nanogate): the client
// (`@x402/fetch`) and the resource server (`x402ResourceServer`, `@x402/express`).
export { ExactNanoScheme, MAINNET_SEND_THRESHOLD, NanoRpcError } from "./scheme.js";
export type { ExactNanoSchemeOptions, NanoRequirements, WorkSource } from "./scheme.js";
export { ExactNanoServerScheme, RAW_PER_XNO, xnoToRaw } from "./server.js";
export type { NanoAssetAmount } from "./server.js";
export * as nano from "./nano.js";
