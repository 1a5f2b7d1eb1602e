"""The Nano primitives and the client scheme against the repository's conformance vectors
(tests/vectors/). A missing vector file fails the run: these tests must never pass vacuously."""

from __future__ import annotations

import json
import pathlib
import unittest

from nanogate_x402 import ExactNanoClientScheme, nano, scheme

VECTORS = pathlib.Path(__file__).resolve().parents[3] / "tests" / "vectors"


def load(name: str) -> dict:
    path = VECTORS / name
    if not path.is_file():
        raise FileNotFoundError(f"conformance vectors missing: {path}")
    return json.loads(path.read_text())


NANO = load("nano-vectors.json")
X402 = load("x402-vectors.json")


class Primitives(unittest.TestCase):
    def test_keys_and_addresses(self) -> None:
        checked = 0
        for v in NANO["keys"]:
            with self.subTest(v["id"]):
                key = bytes.fromhex(v["private_key"])
                pub = nano.public_key(key)
                self.assertEqual(pub.hex().upper(), v["public_key"].upper())
                self.assertEqual(nano.address(pub), v["address"])
                self.assertEqual(nano.decode_address(v["address"]), pub)
                if "seed" in v:
                    derived = nano.key_from_seed(bytes.fromhex(v["seed"]), v["index"])
                    self.assertEqual(derived.hex().upper(), v["private_key"].upper())
                checked += 1
        self.assertGreater(checked, 10)

    def test_invalid_addresses_are_refused(self) -> None:
        for v in NANO["addresses_invalid"]:
            with self.subTest(v["id"]), self.assertRaises(ValueError):
                nano.decode_address(v["address"])

    def test_state_blocks_hash_and_sign(self) -> None:
        signed = 0
        for v in NANO["blocks"]:
            b = v["block"]
            if b.get("type") != "state":
                continue
            with self.subTest(v["id"]):
                digest = nano.block_hash(
                    nano.decode_address(b["account"]),
                    bytes.fromhex(b["previous"]),
                    nano.decode_address(b["representative"]),
                    int(b["balance"]),
                    bytes.fromhex(b["link"]),
                )
                self.assertEqual(digest.hex().upper(), v["hash"].upper())
                if "private_key" in v and "signature_from_private_key" in v:
                    sig = nano.sign(bytes.fromhex(v["private_key"]), digest)
                    self.assertEqual(sig.hex().upper(), v["signature_from_private_key"].upper())
                    signed += 1
        self.assertGreater(signed, 5)

    def test_work_difficulty(self) -> None:
        for v in NANO["work"]:
            with self.subTest(v["id"]):
                d = nano.work_difficulty(bytes.fromhex(v["root"]), int(v["work"], 16))
                self.assertEqual(d, int(v["difficulty"], 16))

    def test_local_work_reaches_the_dev_threshold(self) -> None:
        threshold = int(NANO["thresholds"]["dev"]["send"], 16)
        root = bytes(range(32))
        work = nano.generate_work(root, threshold)
        self.assertGreaterEqual(nano.work_difficulty(root, work), threshold)


class Scheme(unittest.TestCase):
    """The x402 v2 sample payment, rebuilt by the scheme from the same ledger state."""

    def setUp(self) -> None:
        self.sample = X402["payment_payload_v2"]
        ledger = self.sample["ledger_assumptions"]
        self.expected = self.sample["object"]["payload"]["block"]
        self.calls: list[dict] = []

        def fake_rpc(url: str, body: dict, timeout: float) -> dict:
            self.calls.append(body)
            if body["action"] == "account_info":
                return {
                    "frontier": ledger["payer_frontier_before"],
                    "balance": ledger["payer_balance_before"],
                    "representative": self.expected["representative"],
                }
            if body["action"] == "work_generate":
                return {"work": self.expected["work"]}
            raise AssertionError(f"unexpected RPC {body}")

        self._real_rpc = scheme.rpc
        scheme.rpc = fake_rpc
        self.client = ExactNanoClientScheme(ledger["payer_private_key"], "http://node.invalid")

    def tearDown(self) -> None:
        scheme.rpc = self._real_rpc

    def requirements(self, extra: dict) -> dict:
        return dict(self.sample["object"]["accepted"], extra=extra)

    def test_builds_the_sample_block_with_node_work_at_the_offered_threshold(self) -> None:
        payload = self.client.create_payment_payload(self.requirements({"workThreshold": "ffc0000000000000"}))
        self.assertEqual(payload["block"], self.expected)
        work_calls = [c for c in self.calls if c["action"] == "work_generate"]
        self.assertEqual(work_calls[0]["difficulty"], "ffc0000000000000")

    def test_without_a_threshold_asks_for_mainnet_work(self) -> None:
        self.client.create_payment_payload(self.requirements({}))
        work_calls = [c for c in self.calls if c["action"] == "work_generate"]
        self.assertEqual(work_calls[0]["difficulty"], "fffffff800000000")

    def test_optional_work_is_left_to_the_seller(self) -> None:
        payload = self.client.create_payment_payload(self.requirements({"work": "optional"}))
        block = payload["block"]
        self.assertEqual(block["work"], "0000000000000000")
        self.assertEqual(block["signature"], self.expected["signature"])
        self.assertFalse(any(c["action"] == "work_generate" for c in self.calls))

    def test_underfunded_payer_is_refused(self) -> None:
        req = self.requirements({})
        req["amount"] = str(10**40)
        with self.assertRaises(ValueError):
            self.client.create_payment_payload(req)


if __name__ == "__main__":
    unittest.main()
