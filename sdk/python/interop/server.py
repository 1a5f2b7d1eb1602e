"""Interop resource server: FastAPI with the official x402 Python SDK's payment middleware and
`x402-nano-exact` (the published Nano server scheme), using a nanogate sidecar as its
facilitator. Run by tests/tests/sdk_interop.rs; the settings come from the environment:

NANOGATE_FACILITATOR_URL, NANOGATE_FACILITATOR_TOKEN, NANOGATE_NETWORK, NANOGATE_PAY_TO,
NANOGATE_PRICE_RAW, NANOGATE_PORT. `GET /paid` costs the price; `GET /healthz` is free.
"""

from __future__ import annotations

import os

import uvicorn
from fastapi import FastAPI
from x402 import x402ResourceServer
from x402.http import CreateHeadersAuthProvider, FacilitatorConfig, HTTPFacilitatorClient
from x402.http.middleware.fastapi import payment_middleware
from x402_nano_exact import ExactNanoServerScheme

network = os.environ["NANOGATE_NETWORK"]
token = os.environ["NANOGATE_FACILITATOR_TOKEN"]
auth = {"Authorization": f"Bearer {token}"}
facilitator = HTTPFacilitatorClient(
    FacilitatorConfig(
        url=os.environ["NANOGATE_FACILITATOR_URL"],
        auth_provider=CreateHeadersAuthProvider(lambda: {"verify": auth, "settle": auth, "supported": {}}),
        # /settle waits for the payment to confirm.
        timeout=30.0,
    )
)
server = x402ResourceServer(facilitator)
server.register(network, ExactNanoServerScheme())
routes = {
    "GET /paid": {
        "accepts": {
            "scheme": "exact",
            "network": network,
            "payTo": os.environ["NANOGATE_PAY_TO"],
            "price": {"amount": os.environ["NANOGATE_PRICE_RAW"], "asset": "XNO"},
        },
        "description": "interop test resource",
    }
}
app = FastAPI()
pay = payment_middleware(routes, server)


@app.middleware("http")
async def x402(request, call_next):
    return await pay(request, call_next)


@app.get("/paid")
async def paid() -> dict:
    return {"paid": True}


@app.get("/healthz")
async def healthz() -> dict:
    return {"ok": True}


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(os.environ["NANOGATE_PORT"]), log_level="info")
