// The resource-server side of the Nano `exact` scheme for `@x402/core`'s `x402ResourceServer`
// (and so `@x402/express`): prices in XNO or raw, and the work fields the facilitator
// advertises in `/supported` (`extra.workThreshold`, `extra.work`) copied into every offer, so
// clients make work the facilitator's nodes accept, or none when it attaches work itself.
// Verification and settlement are the facilitator's (e.g. a nanogate sidecar).

/** 1 XNO in raw. */
export const RAW_PER_XNO = 10n ** 30n;
const XNO = "XNO";

/** The SDK's `AssetAmount`. */
export interface NanoAssetAmount {
  asset: string;
  amount: string;
  extra?: Record<string, unknown>;
}

/** An XNO amount (`"0.001"`, `"0.001 XNO"`, `0.001`) in raw, exactly; throws otherwise. */
export function xnoToRaw(value: string | number): string {
  const text = String(value).trim().replace(/\s*XNO$/i, "");
  const m = /^(0|[1-9][0-9]*)(?:\.([0-9]{1,30}))?$/.exec(text);
  if (m === null) throw new Error(`not an XNO amount (fiat prices are not supported): ${value}`);
  const raw = BigInt(m[1]) * RAW_PER_XNO + BigInt((m[2] ?? "").padEnd(30, "0") || "0");
  if (raw <= 0n) throw new Error(`the price must be positive: ${value}`);
  return raw.toString();
}

function rawAmount(price: NanoAssetAmount): NanoAssetAmount {
  if (String(price.asset).toUpperCase() !== XNO) throw new Error(`only ${XNO} is accepted, not ${price.asset}`);
  if (!/^[1-9][0-9]*$/.test(price.amount)) throw new Error(`amount must be a positive raw integer: ${price.amount}`);
  return { asset: XNO, amount: price.amount, extra: { ...(price.extra ?? {}) } };
}

interface Requirements {
  asset: string;
  extra?: Record<string, unknown>;
  [key: string]: unknown;
}

export class ExactNanoServerScheme {
  readonly scheme = "exact";
  readonly defaultAssetTransferMethod = "default";
  readonly paymentFlows = { default: { supported: ["authorization"], default: "authorization" } } as const;

  /** `"0.001"` / `0.001` is XNO; `{asset: "XNO", amount}` is raw. */
  async parsePrice(price: string | number | NanoAssetAmount, _network: string): Promise<NanoAssetAmount> {
    if (typeof price === "object") return rawAmount(price);
    return { asset: XNO, amount: xnoToRaw(price), extra: {} };
  }

  /** Copies the facilitator's work fields into the offer (the route's own `extra` wins). */
  async enhancePaymentRequirements<R extends Requirements>(
    requirements: R,
    supportedKind: { extra?: Record<string, unknown> },
    _facilitatorExtensions: string[],
  ): Promise<R> {
    const kind = supportedKind.extra ?? {};
    const extra: Record<string, unknown> = { ...(requirements.extra ?? {}) };
    for (const key of ["work", "workThreshold"]) {
      if (extra[key] === undefined && kind[key] !== undefined) extra[key] = kind[key];
    }
    return { ...requirements, asset: XNO, extra };
  }
}
