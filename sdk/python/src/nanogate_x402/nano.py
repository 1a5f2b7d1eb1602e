"""Nano primitives a payer needs: keys, addresses, state-block hashing and signing, work.

Written for this package from the Nano protocol (see docs/design.md of nanogate): state block
hash = BLAKE2b-256 over a 32-byte preamble (6), account, previous, representative, balance
(16 bytes big-endian) and link; signatures are Ed25519 with BLAKE2b-512 in place of SHA-512;
work difficulty = little-endian u64 of BLAKE2b-64(work as 8 LE bytes || root).
"""

from __future__ import annotations

import hashlib

_ALPHABET = "13456789abcdefghijkmnopqrstuwxyz"

# Ed25519 curve constants (RFC 8032).
_P = 2**255 - 19
_L = 2**252 + 27742317777372353535851937790883648493
_D = (-121665 * pow(121666, _P - 2, _P)) % _P
_BY = (4 * pow(5, _P - 2, _P)) % _P


def _recover_x(y: int, sign: int) -> int:
    xx = (y * y - 1) * pow(_D * y * y + 1, _P - 2, _P) % _P
    x = pow(xx, (_P + 3) // 8, _P)
    if (x * x - xx) % _P != 0:
        x = x * pow(2, (_P - 1) // 4, _P) % _P
    if x & 1 != sign:
        x = _P - x
    return x


# Points in extended coordinates (X, Y, Z, T) with x = X/Z, y = Y/Z, xy = T/Z.
_B = (_recover_x(_BY, 0), _BY, 1, _recover_x(_BY, 0) * _BY % _P)


def _add(p, q):
    a = (p[1] - p[0]) * (q[1] - q[0]) % _P
    b = (p[1] + p[0]) * (q[1] + q[0]) % _P
    c = 2 * p[3] * q[3] * _D % _P
    d = 2 * p[2] * q[2] % _P
    e, f, g, h = b - a, d - c, d + c, b + a
    return (e * f % _P, g * h % _P, f * g % _P, e * h % _P)


def _mul(s: int, p):
    q = (0, 1, 1, 0)
    while s:
        if s & 1:
            q = _add(q, p)
        p = _add(p, p)
        s >>= 1
    return q


def _encode_point(p) -> bytes:
    zi = pow(p[2], _P - 2, _P)
    x, y = p[0] * zi % _P, p[1] * zi % _P
    return (y | ((x & 1) << 255)).to_bytes(32, "little")


def _h512(*parts: bytes) -> bytes:
    h = hashlib.blake2b(digest_size=64)
    for part in parts:
        h.update(part)
    return h.digest()


def _expand(private_key: bytes) -> tuple[int, bytes]:
    h = _h512(private_key)
    a = int.from_bytes(h[:32], "little")
    a &= (1 << 254) - 8
    a |= 1 << 254
    return a, h[32:]


def public_key(private_key: bytes) -> bytes:
    """The account key of a 32-byte private key."""
    a, _ = _expand(private_key)
    return _encode_point(_mul(a, _B))


def sign(private_key: bytes, message: bytes) -> bytes:
    """Ed25519-BLAKE2b signature (64 bytes) of `message` (for Nano, a block hash)."""
    a, prefix = _expand(private_key)
    pub = _encode_point(_mul(a, _B))
    r = int.from_bytes(_h512(prefix, message), "little") % _L
    big_r = _encode_point(_mul(r, _B))
    k = int.from_bytes(_h512(big_r, pub, message), "little") % _L
    s = (r + k * a) % _L
    return big_r + s.to_bytes(32, "little")


def key_from_seed(seed: bytes, index: int) -> bytes:
    """The private key at `index` of a 32-byte seed: BLAKE2b-256(seed || index as u32 BE)."""
    return hashlib.blake2b(seed + index.to_bytes(4, "big"), digest_size=32).digest()


def _b32(data: bytes, chars: int) -> str:
    n = int.from_bytes(data, "big")
    return "".join(_ALPHABET[(n >> (5 * i)) & 31] for i in reversed(range(chars)))


def address(key: bytes) -> str:
    """`nano_` address of a 32-byte public key."""
    check = hashlib.blake2b(key, digest_size=5).digest()[::-1]
    return "nano_" + _b32(b"\0\0\0" + key, 52)[-52:] + _b32(check, 8)


def decode_address(addr: str) -> bytes:
    """The public key of a `nano_`/`xrb_` address; ValueError if it is not one."""
    if addr.startswith("nano_"):
        body = addr[5:]
    elif addr.startswith("xrb_"):
        body = addr[4:]
    else:
        raise ValueError(f"not a Nano address: {addr!r}")
    if len(body) != 60 or any(c not in _ALPHABET for c in body):
        raise ValueError(f"not a Nano address: {addr!r}")
    n = 0
    for c in body[:52]:
        n = (n << 5) | _ALPHABET.index(c)
    if n >> 256:
        raise ValueError(f"not a Nano address (padding bits set): {addr!r}")
    key = n.to_bytes(32, "big")
    if address(key)[-8:] != body[52:]:
        raise ValueError(f"not a Nano address (bad checksum): {addr!r}")
    return key


def block_hash(account: bytes, previous: bytes, representative: bytes, balance: int, link: bytes) -> bytes:
    """Hash of a state block."""
    h = hashlib.blake2b(digest_size=32)
    for part in (bytes(31) + b"\x06", account, previous, representative, balance.to_bytes(16, "big"), link):
        h.update(part)
    return h.digest()


def work_difficulty(root: bytes, work: int) -> int:
    """The difficulty `work` reaches on `root`."""
    d = hashlib.blake2b(work.to_bytes(8, "little") + root, digest_size=8).digest()
    return int.from_bytes(d, "little")


def generate_work(root: bytes, threshold: int, start: int = 0) -> int:
    """Local proof of work, one core: only sensible for low thresholds (test networks)."""
    work = start
    while work_difficulty(root, work) < threshold:
        work = (work + 1) & 0xFFFFFFFFFFFFFFFF
    return work
