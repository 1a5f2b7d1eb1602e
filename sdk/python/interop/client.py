"""Interop client: the official x402 Python SDK (`x402HttpxClient`) with nanogate's Nano
scheme pays one URL and prints what came back as one JSON line. Run by
tests/tests/sdk_interop.rs; the settings come from the environment:

NANOGATE_PAYER_KEY (64 hex), NANOGATE_RPC_URL, NANOGATE_NETWORK, NANOGATE_MAX_RAW (the most
the client may pay), NANOGATE_HOST (optional Host header), and the URL as the argument.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys

from x402 import x402Client
from x402.http.clients import x402HttpxClient

from nanogate_x402 import ExactNanoClientScheme


async def main(url: str) -> int:
    network = os.environ["NANOGATE_NETWORK"]
    client = x402Client()
    client.register(network, ExactNanoClientScheme(os.environ["NANOGATE_PAYER_KEY"], os.environ["NANOGATE_RPC_URL"]))
    # XNO is not one of the SDK's default assets: allow it, capped.
    client.set_spend_controls(
        {"allowed_assets": [{"network": network, "asset": "XNO", "max_amount_per_payment": os.environ["NANOGATE_MAX_RAW"]}]}
    )
    headers = {"Host": os.environ["NANOGATE_HOST"]} if os.environ.get("NANOGATE_HOST") else {}
    async with x402HttpxClient(client, timeout=60) as http:
        resp = await http.get(url, headers=headers)
    receipt = resp.headers.get("payment-response")
    print(
        json.dumps(
            {
                "status": resp.status_code,
                "body": resp.text,
                "paymentResponse": json.loads(base64.b64decode(receipt)) if receipt else None,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1])))
