// The client side of the Nano `exact` scheme (signed block) for `@x402/core` / `@x402/fetch`.
// `createPaymentPayload` builds the send the requirements ask for on the payer's frontier,
// signs it and attaches work: none when the offer says `extra.work: "optional"` (the seller
// attaches it), else work reaching `extra.workThreshold` (the mainnet send threshold when
// absent) from the node's `work_generate`, or computed here with `localWork: true`. The block
// is never broadcast by the client: the seller checks and publishes it.

import * as nano from "./nano.js";

export const MAINNET_SEND_THRESHOLD = 0xfffffff800000000n;

/** The requirement fields the scheme reads (structurally `PaymentRequirements` of `@x402/core`). */
export interface NanoRequirements {
  scheme: string;
  network: string;
  amount: string;
  payTo: string;
  extra?: Record<string, unknown>;
}

/** Finds work reaching `threshold` on `root`. */
export type WorkSource = (root: Uint8Array, threshold: bigint) => Promise<bigint>;

export interface ExactNanoSchemeOptions {
  /** The payer's private key: 64 hex digits or 32 bytes. */
  privateKey: string | Uint8Array;
  /** A node RPC URL, for `account_info` (and `work_generate`). */
  rpcUrl: string;
  /** Compute work here instead of asking the node (low thresholds only). */
  localWork?: boolean;
  /** Any other work source. */
  workSource?: WorkSource;
  /** Bound on one RPC call, ms (work generation gets ten times as long). Default 10 000. */
  timeoutMs?: number;
  /** The fetch to call the node with (default: the global one). */
  fetch?: typeof fetch;
}

export class NanoRpcError extends Error {}

export class ExactNanoScheme {
  readonly scheme = "exact";
  readonly account: string;
  private readonly key: Uint8Array;
  private readonly publicKey: Uint8Array;
  private readonly work: WorkSource;
  private readonly timeoutMs: number;
  private readonly fetcher: typeof fetch;

  constructor(private readonly options: ExactNanoSchemeOptions) {
    const key = typeof options.privateKey === "string" ? nano.hexToBytes(options.privateKey) : options.privateKey;
    if (key.length !== 32) throw new Error("a Nano private key is 32 bytes");
    this.key = key;
    this.publicKey = nano.publicKey(key);
    this.account = nano.address(this.publicKey);
    this.timeoutMs = options.timeoutMs ?? 10_000;
    this.fetcher = options.fetch ?? fetch;
    this.work =
      options.workSource ??
      (options.localWork
        ? async (root, threshold) => nano.generateWork(root, threshold)
        : (root, threshold) => this.nodeWork(root, threshold));
  }

  private async rpc(body: Record<string, string>, timeoutMs: number): Promise<Record<string, string>> {
    let answer: Record<string, string>;
    try {
      const resp = await this.fetcher(this.options.rpcUrl, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(body),
        signal: AbortSignal.timeout(timeoutMs),
      });
      answer = (await resp.json()) as Record<string, string>;
    } catch (e) {
      throw new NanoRpcError(`${body.action}: ${String(e)}`);
    }
    if (answer.error !== undefined) throw new NanoRpcError(`${body.action}: ${answer.error}`);
    return answer;
  }

  private async nodeWork(root: Uint8Array, threshold: bigint): Promise<bigint> {
    const answer = await this.rpc(
      { action: "work_generate", hash: nano.bytesToHex(root), difficulty: threshold.toString(16).padStart(16, "0") },
      this.timeoutMs * 10,
    );
    return BigInt("0x" + answer.work);
  }

  /** The payload `{block}` paying `requirements` exactly. */
  async createPaymentPayload(
    x402Version: number,
    requirements: NanoRequirements,
  ): Promise<{ x402Version: number; payload: Record<string, unknown> }> {
    const payTo = nano.decodeAddress(requirements.payTo);
    const amount = BigInt(requirements.amount);
    if (amount <= 0n) throw new Error("the amount must be positive");
    const extra = requirements.extra ?? {};
    const info = await this.rpc(
      { action: "account_info", account: this.account, representative: "true" },
      this.timeoutMs,
    );
    const previous = nano.hexToBytes(info.frontier);
    const balance = BigInt(info.balance);
    if (balance < amount) throw new Error(`balance ${balance} raw is below the price ${amount} raw`);
    const representative = nano.decodeAddress(info.representative);
    const newBalance = balance - amount;
    const hash = nano.blockHash(this.publicKey, previous, representative, newBalance, payTo);
    const signature = nano.sign(this.key, hash);
    let work = 0n;
    if (extra.work !== "optional") {
      const threshold =
        typeof extra.workThreshold === "string" ? BigInt("0x" + extra.workThreshold) : MAINNET_SEND_THRESHOLD;
      work = await this.work(previous, threshold);
    }
    return {
      x402Version,
      payload: {
        block: {
          type: "state",
          account: this.account,
          previous: nano.bytesToHex(previous),
          representative: nano.address(representative),
          balance: newBalance.toString(),
          link: nano.bytesToHex(payTo),
          link_as_account: nano.address(payTo),
          signature: nano.bytesToHex(signature),
          work: work.toString(16).padStart(16, "0"),
        },
      },
    };
  }
}
