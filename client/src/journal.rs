//! The payment journal: every signed block is written down *before* it is sent, keyed by the
//! request it pays for, so that a retry after a lost response re-presents the same block (and
//! the same accepted offer) instead of paying twice: journal and re-present, never re-sign
//! (feeless402's Nano x402 client follows the same rule; client/README.md#the-journal-never-pay-twice
//! tells the user's side).
//!
//! One JSON file; every change rewrites it atomically (temporary file in the same directory,
//! fsync, rename, fsync of the directory), so a crash leaves either the old or the new journal,
//! never half of one. Within a process, changes are serialised by a mutex; two processes
//! sharing a journal can lose each other's concurrent updates (run one payer per journal, or
//! give each its own `--journal`).
//!
//! The journal also keeps the prepaid passes bought with `--pass` ([`PassEntry`]): the token is
//! a bearer credential worth the pass price, so it is written down (with the purchase's removal
//! from the payment entries, in one atomic write) before the request that bought it returns,
//! and shown only by its [`PassEntry::fingerprint`].

use blake2::digest::consts::U32;
use blake2::{Blake2b, Digest};
use nanogate_protocol::hex;
use nanogate_protocol::nano::{parse_raw, StateBlock};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::PayError;
use crate::offer::ChallengeVersion;
use crate::payment::SignedPayment;

/// Format version of a journal file without passes (what every client reads).
pub const JOURNAL_FORMAT: u32 = 1;
/// Format version of a journal file holding passes. A client from before passes ignores the
/// unknown `passes` field and would drop the tokens on its next write, so such a file says 2
/// and an older client refuses it ("unknown journal format 2") instead.
pub const JOURNAL_FORMAT_PASSES: u32 = 2;

/// The key of a request: method, normalised URL (query included) and a BLAKE2b-256 of the body,
/// so a different query or body is a different purchase.
pub fn journal_key(method: &str, url: &str, body: &[u8]) -> String {
    let url = reqwest::Url::parse(url)
        .map(|u| u.to_string())
        .unwrap_or_else(|_| url.to_owned());
    format!(
        "{} {} {}",
        method.to_ascii_uppercase(),
        url,
        body_hash(body)
    )
}

/// Lower-case hex BLAKE2b-256 of a request body.
pub fn body_hash(body: &[u8]) -> String {
    let digest: [u8; 32] = Blake2b::<U32>::digest(body).into();
    hex::encode_lower(&digest)
}

/// One journalled payment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JournalEntry {
    pub method: String,
    pub url: String,
    pub body_hash: String,
    /// Unix seconds when the block was signed.
    pub created_at: u64,
    /// 1 (`X-PAYMENT`) or 2 (`PAYMENT-SIGNATURE`).
    pub x402_version: u32,
    /// The block hash (upper-case hex).
    pub hash: String,
    /// The paying account and the frontier the block builds on.
    pub account: String,
    pub previous: String,
    pub amount_raw: String,
    pub network: String,
    pub pay_to: String,
    /// The payment object exactly as sent.
    pub payment: Value,
    /// Hashes of earlier blocks for this request that the server refused before they reached
    /// the ledger, signed on the same frontier as this one (so at most one of all of them can
    /// ever settle). Kept so that if one of them does settle, we report it, not pay again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub superseded: Vec<String>,
}

impl JournalEntry {
    pub fn new(method: &str, url: &str, body: &[u8], payment: &SignedPayment) -> Self {
        let created_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        JournalEntry {
            method: method.to_ascii_uppercase(),
            url: url.to_owned(),
            body_hash: body_hash(body),
            created_at,
            x402_version: match payment.version {
                ChallengeVersion::V1 => 1,
                ChallengeVersion::V2 => 2,
            },
            hash: payment.hash().to_hex(),
            account: payment.block.account.to_address(),
            previous: payment.block.previous.to_hex(),
            amount_raw: payment.amount.to_string(),
            network: payment.network.clone(),
            pay_to: payment.pay_to.clone(),
            payment: payment.json.clone(),
            superseded: Vec::new(),
        }
    }

    /// The payment to re-present, rebuilt from the journal (and checked: the stored block must
    /// still hash to the stored hash).
    pub fn to_payment(&self) -> Result<SignedPayment, String> {
        let version = match self.x402_version {
            1 => ChallengeVersion::V1,
            2 => ChallengeVersion::V2,
            v => return Err(format!("unknown x402Version {v}")),
        };
        let block_json = self
            .payment
            .get("payload")
            .and_then(|p| p.get("block"))
            .ok_or("payment has no payload.block")?;
        let block = StateBlock::from_json(block_json).map_err(|e| e.to_string())?;
        if !block.hash().to_hex().eq_ignore_ascii_case(&self.hash) {
            return Err("stored block does not match the stored hash".into());
        }
        let amount = parse_raw(&self.amount_raw).map_err(|e| format!("amountRaw: {e}"))?;
        Ok(SignedPayment {
            version,
            block,
            json: self.payment.clone(),
            amount,
            network: self.network.clone(),
            pay_to: self.pay_to.clone(),
        })
    }
}

/// One prepaid pass bought with `--pass`: the bearer token and what it grants. Its `Debug`
/// never shows the token.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PassEntry {
    /// `scheme://host:port` of the server that sold it: the token is never sent elsewhere.
    pub origin: String,
    /// The route group it covers (as the offer said).
    pub group: String,
    /// The pass name (`--pass NAME`).
    pub name: String,
    /// The token presented on later requests (secret).
    pub token: String,
    /// The server's pass id, when the receipt gives one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Unix seconds after which the server refuses it, when it says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
    /// Requests granted, for a request-count pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<u64>,
    /// The block that paid for it (upper-case hex).
    pub hash: String,
    pub amount_raw: String,
    /// Unix seconds when it was bought.
    pub bought_at: u64,
}

impl std::fmt::Debug for PassEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PassEntry")
            .field("origin", &self.origin)
            .field("group", &self.group)
            .field("name", &self.name)
            .field("token", &self.fingerprint())
            .field("id", &self.id)
            .field("expires_at", &self.expires_at)
            .field("requests", &self.requests)
            .field("hash", &self.hash)
            .finish_non_exhaustive()
    }
}

impl PassEntry {
    /// The journal key of a pass: one live pass per origin, group and name.
    pub fn key(origin: &str, group: &str, name: &str) -> String {
        format!("{origin} {group} {name}")
    }

    pub fn journal_key(&self) -> String {
        Self::key(&self.origin, &self.group, &self.name)
    }

    /// What the user sees of the pass: its id (as the operator's `/v1/admin/passes` lists
    /// it; the token carries it, but without the MAC it opens nothing), else a hash of the
    /// token. Never the token.
    pub fn fingerprint(&self) -> String {
        match &self.id {
            Some(id) => id.clone(),
            None => {
                let digest: [u8; 32] = Blake2b::<U32>::digest(self.token.as_bytes()).into();
                format!("blake2b:{}", hex::encode_lower(&digest[..8]))
            }
        }
    }

    /// Past its expiry at `now` (unix seconds)? A pass without one never expires locally;
    /// the server still has the last word.
    pub fn expired(&self, now: u64) -> bool {
        self.expires_at.is_some_and(|e| now >= e)
    }
}

/// `scheme://host:port` of a URL (the port always written), the scope of a pass token.
pub fn origin_of(url: &reqwest::Url) -> String {
    format!(
        "{}://{}:{}",
        url.scheme(),
        url.host_str().unwrap_or_default(),
        url.port_or_known_default().unwrap_or_default()
    )
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct JournalFile {
    version: u32,
    entries: BTreeMap<String, JournalEntry>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    passes: BTreeMap<String, PassEntry>,
}

/// The journal at one path.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    lock: Mutex<()>,
}

impl Journal {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Journal {
            path: path.into(),
            lock: Mutex::new(()),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `$NANOGATE_JOURNAL`, else `$XDG_STATE_HOME/nanogate/journal.json`, else
    /// `~/.local/state/nanogate/journal.json`.
    pub fn default_path() -> Option<PathBuf> {
        let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
        if let Some(p) = env("NANOGATE_JOURNAL") {
            return Some(PathBuf::from(p));
        }
        if let Some(state) = env("XDG_STATE_HOME") {
            return Some(PathBuf::from(state).join("nanogate").join("journal.json"));
        }
        env("HOME").map(|home| {
            PathBuf::from(home)
                .join(".local")
                .join("state")
                .join("nanogate")
                .join("journal.json")
        })
    }

    fn err(&self, message: impl std::fmt::Display) -> PayError {
        PayError::Journal {
            path: self.path.display().to_string(),
            message: message.to_string(),
        }
    }

    fn guard(&self) -> std::sync::MutexGuard<'_, ()> {
        // A panic while holding the lock cannot leave the file half-written (writes are
        // atomic), so a poisoned lock is safe to take over.
        self.lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn load(&self) -> Result<JournalFile, PayError> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(JournalFile {
                    version: JOURNAL_FORMAT,
                    ..JournalFile::default()
                })
            }
            Err(e) => return Err(self.err(e)),
        };
        let file: JournalFile = serde_json::from_slice(&bytes).map_err(|e| {
            self.err(format!(
                "unreadable ({e}); it may record payments, so inspect or move it aside \
                 rather than deleting it"
            ))
        })?;
        if file.version != JOURNAL_FORMAT && file.version != JOURNAL_FORMAT_PASSES {
            return Err(self.err(format!("unknown journal format {}", file.version)));
        }
        Ok(file)
    }

    fn store(&self, file: &mut JournalFile) -> Result<(), PayError> {
        file.version = if file.passes.is_empty() {
            JOURNAL_FORMAT
        } else {
            JOURNAL_FORMAT_PASSES
        };
        let json = serde_json::to_vec_pretty(file).map_err(|e| self.err(e))?;
        write_atomic(&self.path, &json).map_err(|e| self.err(e))
    }

    /// The entry for `key`, if any.
    pub fn get(&self, key: &str) -> Result<Option<JournalEntry>, PayError> {
        let _g = self.guard();
        Ok(self.load()?.entries.remove(key))
    }

    /// All entries (for inspection and tests).
    pub fn entries(&self) -> Result<BTreeMap<String, JournalEntry>, PayError> {
        let _g = self.guard();
        Ok(self.load()?.entries)
    }

    /// Records (or replaces) the entry for `key`; durable when this returns.
    pub fn put(&self, key: &str, entry: JournalEntry) -> Result<(), PayError> {
        let _g = self.guard();
        let mut file = self.load()?;
        file.entries.insert(key.to_owned(), entry);
        self.store(&mut file)
    }

    /// Removes the entry for `key` only if it is still the payment `hash` (another run may
    /// have replaced it). Returns whether something was removed.
    pub fn remove(&self, key: &str, hash: &str) -> Result<bool, PayError> {
        let _g = self.guard();
        let mut file = self.load()?;
        match file.entries.get(key) {
            Some(e) if e.hash.eq_ignore_ascii_case(hash) => {
                file.entries.remove(key);
                self.store(&mut file)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

impl Journal {
    /// The passes named `name` held for `origin`, any group, the most recently bought first.
    pub fn passes(&self, origin: &str, name: &str) -> Result<Vec<PassEntry>, PayError> {
        let _g = self.guard();
        let mut found: Vec<PassEntry> = self
            .load()?
            .passes
            .into_values()
            .filter(|p| p.origin == origin && p.name == name)
            .collect();
        found.sort_by_key(|p| std::cmp::Reverse(p.bought_at));
        Ok(found)
    }

    /// Every pass held (for inspection and tests).
    pub fn all_passes(&self) -> Result<BTreeMap<String, PassEntry>, PayError> {
        let _g = self.guard();
        Ok(self.load()?.passes)
    }

    /// Records a bought pass and, in the same atomic write, forgets the payment entry `key`
    /// that bought it (if it is still the block `hash`): a crash leaves either the payment
    /// journalled (to re-present) or the token kept, never neither.
    pub fn keep_pass(&self, key: &str, hash: &str, pass: PassEntry) -> Result<(), PayError> {
        let _g = self.guard();
        let mut file = self.load()?;
        if file
            .entries
            .get(key)
            .is_some_and(|e| e.hash.eq_ignore_ascii_case(hash))
        {
            file.entries.remove(key);
        }
        file.passes.insert(pass.journal_key(), pass);
        self.store(&mut file)
    }

    /// Forgets a spent, expired or refused pass, only if it is still the token `token`
    /// (another run may have bought the next one). Returns whether something was removed.
    pub fn drop_pass(&self, pass_key: &str, token: &str) -> Result<bool, PayError> {
        let _g = self.guard();
        let mut file = self.load()?;
        match file.passes.get(pass_key) {
            Some(p) if p.token == token => {
                file.passes.remove(pass_key);
                self.store(&mut file)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

/// Writes `bytes` to `path` atomically: a temporary file beside it, fsync, rename over, fsync
/// of the directory. Creates missing parent directories. The file is private to the user.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "journal.json".into());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let tmp = dir.join(format!(".{name}.{}.{nanos}.tmp", std::process::id()));
    let result = (|| {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        // Make the rename itself durable. Not every platform can open a directory.
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::offer::usable_offer;
    use crate::rpc::AccountInfo;
    use nanogate_protocol::nano::{BlockHash, PrivateKey};
    use serde_json::json;

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "nanogate-client-journal-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn payment(amount: u128) -> SignedPayment {
        let offer = json!({"scheme": "exact", "network": "nano:devnet", "asset": "XNO",
            "amount": amount.to_string(),
            "payTo": PrivateKey::from_bytes([3; 32]).public_key().to_address(),
            "maxTimeoutSeconds": 60, "extra": {"nonce": "n1"}});
        let o = usable_offer(0, &offer).unwrap();
        let key = PrivateKey::from_bytes([1; 32]);
        let acct = AccountInfo {
            frontier: BlockHash([5; 32]),
            balance: 10_000,
            representative: key.public_key(),
        };
        SignedPayment::new(ChallengeVersion::V2, &o, None, None, &acct, &key, 1).unwrap()
    }

    #[test]
    fn keys_distinguish_method_url_query_and_body() {
        let k = journal_key("get", "http://h:1/a?x=1", b"");
        assert_eq!(k, journal_key("GET", "http://h:1/a?x=1", b""));
        assert!(k.starts_with("GET http://h:1/a?x=1 "));
        assert_ne!(k, journal_key("POST", "http://h:1/a?x=1", b""));
        assert_ne!(k, journal_key("GET", "http://h:1/a?x=2", b""));
        assert_ne!(k, journal_key("GET", "http://h:1/b?x=1", b""));
        assert_ne!(
            journal_key("POST", "http://h/a", b"1"),
            journal_key("POST", "http://h/a", b"2")
        );
        // Normalisation: an explicit default port and host case do not make a new purchase.
        assert_eq!(
            journal_key("GET", "http://H:80/a", b""),
            journal_key("GET", "http://h/a", b"")
        );
    }

    #[test]
    fn put_get_remove_round_trip_and_survive_reopen() {
        let dir = tmpdir("roundtrip");
        let path = dir.join("nested").join("journal.json");
        let j = Journal::new(&path);
        assert!(j.get("k").unwrap().is_none());
        let p = payment(300);
        let e = JournalEntry::new("GET", "http://h/a", b"", &p);
        j.put("k", e.clone()).unwrap();
        let again = Journal::new(&path);
        let got = again.get("k").unwrap().unwrap();
        assert_eq!(got, e);
        let back = got.to_payment().unwrap();
        assert_eq!(back.block, p.block);
        assert_eq!(back.header_value(), p.header_value());
        // A different hash does not remove the entry.
        assert!(!again.remove("k", "00").unwrap());
        assert!(again
            .remove("k", &p.hash().to_hex().to_lowercase())
            .unwrap());
        assert!(again.get("k").unwrap().is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn writes_are_atomic_and_leave_no_temporaries() {
        let dir = tmpdir("atomic");
        let path = dir.join("journal.json");
        let j = Journal::new(&path);
        for i in 0..20u128 {
            let p = payment(100 + i);
            j.put(
                &format!("k{i}"),
                JournalEntry::new("GET", "http://h/a", b"", &p),
            )
            .unwrap();
            // Every intermediate state is a complete, parseable journal.
            let text = std::fs::read_to_string(&path).unwrap();
            let v: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(v["entries"].as_object().unwrap().len() as u128, i + 1);
        }
        let names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["journal.json".to_string()]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_corrupt_journal_is_an_error_not_silently_discarded() {
        let dir = tmpdir("corrupt");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("journal.json");
        std::fs::write(&path, b"{not json").unwrap();
        let j = Journal::new(&path);
        let e = j.get("k").unwrap_err();
        assert!(matches!(e, PayError::Journal { .. }));
        assert!(j
            .put(
                "k",
                JournalEntry::new("GET", "http://h/a", b"", &payment(1))
            )
            .is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"{not json");
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn pass(group: &str, token: &str, bought_at: u64) -> PassEntry {
        PassEntry {
            origin: "http://h:80".into(),
            group: group.into(),
            name: "hour".into(),
            token: token.into(),
            id: Some("00".repeat(16)),
            expires_at: Some(2_000_000_000),
            requests: None,
            hash: "AB".into(),
            amount_raw: "10".into(),
            bought_at,
        }
    }

    #[test]
    fn a_bought_pass_replaces_its_payment_in_one_write_and_survives_reopen() {
        let dir = tmpdir("pass");
        let path = dir.join("journal.json");
        let j = Journal::new(&path);
        let p = payment(300);
        let hash = p.hash().to_hex();
        j.put("k", JournalEntry::new("GET", "http://h/a", b"", &p))
            .unwrap();
        let v: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(v["version"], 1, "no passes: readable by every client");
        j.keep_pass("k", &hash.to_lowercase(), pass("api", "SECRET-TOKEN-1", 5))
            .unwrap();
        let again = Journal::new(&path);
        assert!(again.get("k").unwrap().is_none(), "the purchase is settled");
        let held = again.passes("http://h:80", "hour").unwrap();
        assert_eq!(held, vec![pass("api", "SECRET-TOKEN-1", 5)]);
        let v: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(
            v["version"], JOURNAL_FORMAT_PASSES,
            "older clients refuse, not drop"
        );
        // Another origin or name holds nothing.
        assert!(again.passes("http://h:8080", "hour").unwrap().is_empty());
        assert!(again.passes("http://h:80", "day").unwrap().is_empty());
        // A newer pass of another group comes first; the same group replaces.
        again
            .keep_pass("none", "00", pass("web", "SECRET-TOKEN-2", 9))
            .unwrap();
        let held = again.passes("http://h:80", "hour").unwrap();
        assert_eq!(
            held.iter().map(|p| p.group.as_str()).collect::<Vec<_>>(),
            ["web", "api"]
        );
        again
            .keep_pass("none", "00", pass("api", "SECRET-TOKEN-3", 10))
            .unwrap();
        assert_eq!(again.all_passes().unwrap().len(), 2);
        // Dropping is by token: a stale token does not remove its replacement.
        let key = PassEntry::key("http://h:80", "api", "hour");
        assert!(!again.drop_pass(&key, "SECRET-TOKEN-1").unwrap());
        assert!(again.drop_pass(&key, "SECRET-TOKEN-3").unwrap());
        assert_eq!(again.passes("http://h:80", "hour").unwrap().len(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_pass_token_is_never_printed_in_full() {
        let p = pass("api", "SECRET-TOKEN-abcdefghijklmnop", 1);
        let shown = format!("{p:?} {}", p.fingerprint());
        assert!(!shown.contains("SECRET-TOKEN-abcdefghijklmnop"), "{shown}");
        assert!(shown.contains(&"00".repeat(16)), "the id: {shown}");
        let anonymous = PassEntry {
            id: None,
            ..p.clone()
        };
        assert!(anonymous.fingerprint().starts_with("blake2b:"));
        assert!(!anonymous.fingerprint().contains("SECRET"));
        assert!(!p.expired(1_999_999_999) && p.expired(2_000_000_000));
        let url = reqwest::Url::parse("http://H/a?b").unwrap();
        assert_eq!(origin_of(&url), "http://h:80");
    }

    #[test]
    fn tampered_entry_is_refused_on_reload() {
        let p = payment(300);
        let mut e = JournalEntry::new("GET", "http://h/a", b"", &p);
        e.payment["payload"]["block"]["balance"] = json!("1");
        assert!(e.to_payment().is_err());
    }
}
