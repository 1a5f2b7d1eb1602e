//! State blocks in nano-node's JSON form, their hash, and strict parsing.
//!
//! `link_as_account` is output only: it is not hashed or signed, so parsing ignores it and
//! every decision uses `link`.

use super::amount::parse_raw;
use super::keys::{PublicKey, Signature};
use super::work::{difficulty, work_from_hex, work_to_hex};
use super::{blake2b_256, PrivateKey};
use crate::hex;
use serde_json::{Map, Value};
use std::fmt;
use thiserror::Error;

/// A 32-byte block hash.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct BlockHash(pub [u8; 32]);

impl BlockHash {
    pub const ZERO: BlockHash = BlockHash([0; 32]);

    pub fn from_hex(s: &str) -> Result<Self, hex::HexError> {
        hex::decode_array(s).map(BlockHash)
    }

    pub fn to_hex(&self) -> String {
        hex::encode_upper(&self.0)
    }

    pub fn is_zero(&self) -> bool {
        self.0 == [0; 32]
    }
}

impl fmt::Debug for BlockHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlockHash({})", self.to_hex())
    }
}

impl fmt::Display for BlockHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl serde::Serialize for BlockHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for BlockHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        BlockHash::from_hex(&s).map_err(serde::de::Error::custom)
    }
}

/// Why a JSON block was refused. The three kinds match the x402 malformed-header categories
/// `block_missing_fields`, `bad_hex_field` and `bad_block_field`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BlockError {
    #[error("block is not a JSON object")]
    NotObject,
    #[error("block field `{0}` is missing or not a string")]
    Missing(&'static str),
    #[error("block field `{field}` is not valid hex: {source}")]
    BadHex {
        field: &'static str,
        source: hex::HexError,
    },
    #[error("block field `{field}` is invalid: {reason}")]
    Invalid { field: &'static str, reason: String },
}

/// A Nano state block. `link` is kept as raw bytes: a destination key for sends, a source hash
/// for receives, zero for changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateBlock {
    pub account: PublicKey,
    pub previous: BlockHash,
    pub representative: PublicKey,
    pub balance: u128,
    pub link: [u8; 32],
    pub signature: Signature,
    pub work: u64,
}

const STATE_PREAMBLE: [u8; 32] = {
    let mut p = [0u8; 32];
    p[31] = 6;
    p
};

const FIELDS: [&str; 8] = [
    "type",
    "account",
    "previous",
    "representative",
    "balance",
    "link",
    "signature",
    "work",
];

fn field<'a>(obj: &'a Map<String, Value>, name: &'static str) -> Result<&'a str, BlockError> {
    obj.get(name)
        .and_then(Value::as_str)
        .ok_or(BlockError::Missing(name))
}

fn hex_field<const N: usize>(
    obj: &Map<String, Value>,
    name: &'static str,
) -> Result<[u8; N], BlockError> {
    hex::decode_array(field(obj, name)?).map_err(|source| BlockError::BadHex {
        field: name,
        source,
    })
}

fn account_field(obj: &Map<String, Value>, name: &'static str) -> Result<PublicKey, BlockError> {
    PublicKey::from_address(field(obj, name)?).map_err(|e| BlockError::Invalid {
        field: name,
        reason: e.to_string(),
    })
}

impl StateBlock {
    /// Parses nano-node's JSON form. Every field must be a string; hex is accepted in either
    /// case; `link` may be 64 hex characters or an address (as nano-node allows).
    pub fn from_json(value: &Value) -> Result<Self, BlockError> {
        let obj = value.as_object().ok_or(BlockError::NotObject)?;
        for name in FIELDS {
            field(obj, name)?;
        }
        if field(obj, "type")? != "state" {
            return Err(BlockError::Invalid {
                field: "type",
                reason: "only state blocks are accepted".into(),
            });
        }
        let account = account_field(obj, "account")?;
        let previous = BlockHash(hex_field(obj, "previous")?);
        let representative = account_field(obj, "representative")?;
        let balance = parse_raw(field(obj, "balance")?).map_err(|e| BlockError::Invalid {
            field: "balance",
            reason: e.to_string(),
        })?;
        let link_str = field(obj, "link")?;
        let link = if link_str.starts_with("nano_") || link_str.starts_with("xrb_") {
            account_field(obj, "link")?.0
        } else {
            hex_field(obj, "link")?
        };
        let signature = Signature(hex_field(obj, "signature")?);
        let work = work_from_hex(field(obj, "work")?).map_err(|source| BlockError::BadHex {
            field: "work",
            source,
        })?;
        Ok(StateBlock {
            account,
            previous,
            representative,
            balance,
            link,
            signature,
            work,
        })
    }

    /// nano-node's JSON form, with `link_as_account` for readers (never for decisions).
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "type": "state",
            "account": self.account.to_address(),
            "previous": self.previous.to_hex(),
            "representative": self.representative.to_address(),
            "balance": self.balance.to_string(),
            "link": hex::encode_upper(&self.link),
            "link_as_account": PublicKey(self.link).to_address(),
            "signature": self.signature.to_hex(),
            "work": work_to_hex(self.work),
        })
    }

    /// The 176 bytes that are hashed.
    pub fn hash_input(&self) -> [u8; 176] {
        let mut b = [0u8; 176];
        b[..32].copy_from_slice(&STATE_PREAMBLE);
        b[32..64].copy_from_slice(&self.account.0);
        b[64..96].copy_from_slice(&self.previous.0);
        b[96..128].copy_from_slice(&self.representative.0);
        b[128..144].copy_from_slice(&self.balance.to_be_bytes());
        b[144..176].copy_from_slice(&self.link);
        b
    }

    pub fn hash(&self) -> BlockHash {
        BlockHash(blake2b_256(&[&self.hash_input()]))
    }

    /// Whether `signature` is the account's over the hash.
    pub fn signature_valid(&self) -> bool {
        self.account.verify(&self.hash().0, &self.signature)
    }

    /// Signs the block in place with `key` (which should be the account's).
    pub fn sign(&mut self, key: &PrivateKey) {
        self.signature = key.sign(&self.hash().0);
    }

    /// The work root: `previous`, or the account key for an account's first block.
    pub fn root(&self) -> [u8; 32] {
        if self.previous.is_zero() {
            self.account.0
        } else {
            self.previous.0
        }
    }

    /// The difficulty this block's work reaches.
    pub fn work_difficulty(&self) -> u64 {
        difficulty(&self.root(), self.work)
    }

    /// For a send, the destination: `link` read as a public key.
    pub fn link_as_key(&self) -> PublicKey {
        PublicKey(self.link)
    }
}

impl serde::Serialize for StateBlock {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for StateBlock {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        StateBlock::from_json(&v).map_err(serde::de::Error::custom)
    }
}

/// Hash of a legacy open block (no preamble): BLAKE2b-256(source ‖ representative ‖ account).
/// Only the genesis blocks are of this kind in practice.
pub fn legacy_open_hash(
    source: &[u8; 32],
    representative: &PublicKey,
    account: &PublicKey,
) -> BlockHash {
    BlockHash(blake2b_256(&[source, &representative.0, &account.0]))
}
