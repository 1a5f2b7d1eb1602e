// Nano (XNO) `exact` client scheme for the official x402 TypeScript SDK (nanogate).
export { ExactNanoScheme, MAINNET_SEND_THRESHOLD, NanoRpcError } from "./scheme.js";
export type { ExactNanoSchemeOptions, NanoRequirements, WorkSource } from "./scheme.js";
export * as nano from "./nano.js";
