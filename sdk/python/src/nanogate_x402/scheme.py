"""The client side of the Nano `exact` scheme (signed block) for the official `x402` SDK.

`create_payment_payload` builds the send the requirements ask for on the payer's confirmed
frontier, signs it, and attaches work: none when the offer says `extra.work: "optional"` (the
seller attaches it), else work reaching `extra.workThreshold` (the mainnet send threshold when
absent) from the node's `work_generate`, or computed here with `local_work=True`.
The block is never broadcast by the client: the seller checks and publishes it.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable
from typing import Any

from . import nano

SCHEME = "exact"
#: The mainnet send threshold: the fallback when an offer carries no `workThreshold`.
MAINNET_SEND_THRESHOLD = 0xFFFFFFF800000000
WORK_OPTIONAL = "optional"

#: Finds work for `(root, threshold)`.
WorkSource = Callable[[bytes, int], int]


class NanoRpcError(RuntimeError):
    """The node refused or could not be reached."""


def rpc(url: str, body: dict[str, Any], timeout: float) -> dict[str, Any]:
    """One node RPC call."""
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            answer = json.loads(resp.read())
    except OSError as e:
        raise NanoRpcError(f"{body.get('action')}: {e}") from e
    if "error" in answer:
        raise NanoRpcError(f"{body.get('action')}: {answer['error']}")
    return answer


def _field(requirements: Any, name: str, wire: str) -> Any:
    """A requirements field, from the SDK's model or from wire JSON."""
    if isinstance(requirements, dict):
        return requirements.get(wire)
    return getattr(requirements, name)


class ExactNanoClientScheme:
    """`SchemeNetworkClient` for Nano: register it for the Nano network you pay on.

    Args:
        private_key: the payer's 32-byte private key (bytes or 64 hex digits).
        rpc_url: a node RPC URL, for `account_info` (and `work_generate`).
        local_work: compute work here instead of asking the node (low thresholds only).
        work_source: any other `(root, threshold) -> work` function.
        timeout: seconds per RPC call (work generation gets 10 times as long).
    """

    scheme = SCHEME

    def __init__(
        self,
        private_key: bytes | str,
        rpc_url: str,
        *,
        local_work: bool = False,
        work_source: WorkSource | None = None,
        timeout: float = 10.0,
    ) -> None:
        key = bytes.fromhex(private_key) if isinstance(private_key, str) else bytes(private_key)
        if len(key) != 32:
            raise ValueError("a Nano private key is 32 bytes")
        self._key = key
        self.public_key = nano.public_key(key)
        self.account = nano.address(self.public_key)
        self._rpc_url = rpc_url
        self._timeout = timeout
        if work_source is not None:
            self._work = work_source
        elif local_work:
            self._work = nano.generate_work
        else:
            self._work = self._node_work

    def _node_work(self, root: bytes, threshold: int) -> int:
        answer = rpc(
            self._rpc_url,
            {"action": "work_generate", "hash": root.hex().upper(), "difficulty": f"{threshold:016x}"},
            self._timeout * 10,
        )
        return int(answer["work"], 16)

    def create_payment_payload(self, requirements: Any) -> dict[str, Any]:
        """The inner payload `{"block": {...}}` paying `requirements` exactly."""
        pay_to = nano.decode_address(_field(requirements, "pay_to", "payTo"))
        amount = int(_field(requirements, "amount", "amount"))
        extra = _field(requirements, "extra", "extra") or {}
        if amount <= 0:
            raise ValueError("the amount must be positive")
        info = rpc(
            self._rpc_url,
            {"action": "account_info", "account": self.account, "representative": "true"},
            self._timeout,
        )
        previous = bytes.fromhex(info["frontier"])
        balance = int(info["balance"])
        if balance < amount:
            raise ValueError(f"balance {balance} raw is below the price {amount} raw")
        representative = nano.decode_address(info["representative"])
        new_balance = balance - amount
        digest = nano.block_hash(self.public_key, previous, representative, new_balance, pay_to)
        signature = nano.sign(self._key, digest)
        if extra.get("work") == WORK_OPTIONAL:
            work = 0
        else:
            threshold = int(str(extra.get("workThreshold", f"{MAINNET_SEND_THRESHOLD:016x}")), 16)
            work = self._work(previous, threshold)
        return {
            "block": {
                "type": "state",
                "account": self.account,
                "previous": previous.hex().upper(),
                "representative": nano.address(representative),
                "balance": str(new_balance),
                "link": pay_to.hex().upper(),
                "link_as_account": nano.address(pay_to),
                "signature": signature.hex().upper(),
                "work": f"{work:016x}",
            }
        }
