"""Nano (XNO) `exact` client scheme for the official x402 Python SDK (nanogate)."""

from .scheme import MAINNET_SEND_THRESHOLD, ExactNanoClientScheme, NanoRpcError

__all__ = ["ExactNanoClientScheme", "MAINNET_SEND_THRESHOLD", "NanoRpcError"]
