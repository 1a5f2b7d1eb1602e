//! The fixture shop's prepaid passes, on the wire of docs/passes.md: `/pass/…` (group `api`) and
//! `/web/…` (group `web`) sell the single request and two passes, `three` (3 requests) and
//! `hour` (an hour); `/pass-bad/…` sells `three` with a malformed `extra.pass`. A pass offer's
//! MAC binds its scope; a purchase settles through the devnet like any payment and answers the
//! pass in `PAYMENT-RESPONSE` `extensions.pass` (the same pass again for a re-presented block);
//! a token in `x-nanogate-pass` is served or refused with `pass_<reason>`, as the filter does.

use super::*;
use nanogate_protocol::contract::pass::{
    PassIssued, PassKey, PassRefusal, PassTerms, PassToken, EXTENSION_PASS, EXTRA_PASS, HEADER,
};

/// The `three` pass: 3 requests within an hour.
pub const THREE_PRICE: u128 = 2 * PRICE;
/// The `hour` pass.
pub const HOUR_PRICE: u128 = 5 * PRICE;
pub const PASS_SECONDS: u64 = 3600;

/// A pass the shop sold.
#[derive(Debug, Clone)]
pub struct ShopPass {
    pub group: String,
    pub name: String,
    /// Requests left on a counted pass.
    pub left: Option<u32>,
    pub expires_at: u64,
    pub revoked: bool,
}

/// What the shop knows of passes.
#[derive(Default)]
pub struct PassBook {
    /// Passes sold (purchases settled, re-presentations not counted).
    pub sold: AtomicUsize,
    /// Requests that came with a pass token.
    pub presented: AtomicUsize,
    /// Requests served on a pass.
    pub served: AtomicUsize,
    /// Token → pass.
    pub passes: Mutex<std::collections::HashMap<String, ShopPass>>,
    /// Paying block → the pass it bought.
    by_block: Mutex<std::collections::HashMap<String, PassIssued>>,
    next_id: AtomicU64,
}

impl PassBook {
    /// Changes the pass sold with `token` (revoke it, expire it…).
    pub fn edit(&self, token: &str, f: impl FnOnce(&mut ShopPass)) {
        f(self
            .passes
            .lock()
            .unwrap()
            .get_mut(token)
            .expect("a sold token"))
    }
}

/// The pass group of a path, when it sells passes.
pub fn group_of(path: &str) -> Option<&'static str> {
    if path.starts_with("/pass/") || path.starts_with("/pass-bad/") {
        Some("api")
    } else if path.starts_with("/web/") {
        Some("web")
    } else {
        None
    }
}

fn passes(group: &str) -> [(PassTerms, u128); 2] {
    [
        (
            PassTerms {
                name: "three".into(),
                group: group.into(),
                seconds: PASS_SECONDS,
                requests: Some(3),
            },
            THREE_PRICE,
        ),
        (
            PassTerms {
                name: "hour".into(),
                group: group.into(),
                seconds: PASS_SECONDS,
                requests: None,
            },
            HOUR_PRICE,
        ),
    ]
}

fn pass_key() -> PassKey {
    PassKey([9; 32])
}

impl ShopState {
    fn stamp(&self) -> ChallengeStamp {
        let n = self.nonce.fetch_add(1, Ordering::SeqCst);
        let mut nonce = [0u8; 16];
        nonce[8..].copy_from_slice(&n.to_be_bytes());
        ChallengeStamp {
            valid_before: now() + 120,
            nonce,
            key_id: 1,
        }
    }

    fn offer(&self, resource: &str, amount: u128) -> PaymentRequirements {
        PaymentRequirements {
            scheme: "exact".into(),
            network: NETWORK.into(),
            amount: amount.to_string(),
            asset: "XNO".into(),
            pay_to: self.pay_to.to_address(),
            max_timeout_seconds: 30,
            extra: challenge::extra(&self.key, &self.terms(resource, amount), &self.stamp()),
        }
    }

    /// The 402 of a pass route: the single request, then each pass (scope-bound).
    fn pass_challenge(&self, path: &str, group: &str, resource: &str, error: &str) -> Response {
        let mut accepts = vec![self.offer(resource, PRICE)];
        for (terms, price) in passes(group) {
            let mut o = self.offer(&terms.scope(), price);
            let mut pass = serde_json::to_value(&terms).unwrap();
            if path.starts_with("/pass-bad/") && terms.name == "three" {
                pass["seconds"] = json!("soon");
            }
            o.extra.insert(EXTRA_PASS.into(), pass);
            accepts.push(o);
        }
        let pr = PaymentRequired {
            error: Some(error.to_owned()),
            ..PaymentRequired::new(
                None,
                ResourceInfo {
                    url: resource.into(),
                    description: None,
                    mime_type: None,
                },
                accepts,
            )
        };
        reply(
            StatusCode::PAYMENT_REQUIRED,
            vec![("PAYMENT-REQUIRED", encode_header(&pr))],
            serde_json::to_value(&pr).unwrap(),
        )
    }

    /// A paid request on a pass route: the single request, or a pass named by
    /// `accepted.extra.pass.name` whose terms come from our own table, never from the echo.
    async fn pass_purchase(&self, path: &str, group: &str, resource: &str, h: &str) -> Response {
        self.paid_attempts.fetch_add(1, Ordering::SeqCst);
        record(self, "PAYMENT-SIGNATURE", h);
        let accepted = decode_payment(h, MAX_HEADER_BYTES)
            .ok()
            .and_then(|p| p.accepted().cloned());
        let wanted = accepted
            .as_ref()
            .and_then(|a| a.extra.get(EXTRA_PASS))
            .and_then(|p| p.get("name"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let bought = wanted.and_then(|n| passes(group).into_iter().find(|(t, _)| t.name == n));
        let scope = bought.as_ref().map(|(t, _)| t.scope());
        let mac_resource = scope.as_deref().unwrap_or(resource);
        let amount = bought.as_ref().map_or(PRICE, |(_, p)| *p);
        let stamp_ok = accepted
            .and_then(|a| challenge::read_extra(&a.extra).ok())
            .is_some_and(|(stamp, mac)| {
                challenge::verify(
                    &self.key,
                    &self.terms(mac_resource, amount),
                    &stamp,
                    &mac,
                    now(),
                )
                .is_ok()
            });
        if !stamp_ok {
            return self.pass_challenge(path, group, resource, "invalid_challenge");
        }
        let (hash, payer, _) = match self.settle(h, amount, X402Version::V2).await {
            Ok(settled) => settled,
            Err(r) => return self.pass_challenge(path, group, resource, r.as_str()),
        };
        let Some((terms, _)) = bought else {
            return self.served(hash, payer, resource, false).await;
        };
        let issued = self.issue(&hash, &terms);
        if self.drop_next_paid_response.swap(false, Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        let mut receipt = SettlementResponse::success(hash, NETWORK.into(), Some(payer));
        receipt.extensions = Some(serde_json::Map::from_iter([(
            EXTENSION_PASS.to_owned(),
            serde_json::to_value(&issued).unwrap(),
        )]));
        reply(
            StatusCode::OK,
            vec![("PAYMENT-RESPONSE", encode_header(&receipt))],
            json!({"report": format!("paid content for {resource}"), "boughtPass": terms.name}),
        )
    }

    /// The pass bought by block `hash`: minted on the first settlement, the same afterwards.
    fn issue(&self, hash: &str, terms: &PassTerms) -> PassIssued {
        let book = &self.pass_book;
        let mut by_block = book.by_block.lock().unwrap();
        if let Some(p) = by_block.get(hash) {
            return p.clone();
        }
        let mut id = [0u8; 16];
        id[8..].copy_from_slice(&book.next_id.fetch_add(1, Ordering::SeqCst).to_be_bytes());
        let expires_at = now() + terms.seconds;
        let token = PassToken {
            key_id: 1,
            id,
            expires_at,
            requests: terms.requests.unwrap_or(0),
            group: terms.group.clone(),
        }
        .mint(&pass_key());
        let issued = PassIssued {
            token: token.clone(),
            id: nanogate_protocol::hex::encode_lower(&id),
            name: terms.name.clone(),
            group: terms.group.clone(),
            expires_at,
            requests: terms.requests,
        };
        book.passes.lock().unwrap().insert(
            token,
            ShopPass {
                group: terms.group.clone(),
                name: terms.name.clone(),
                left: terms.requests,
                expires_at,
                revoked: false,
            },
        );
        book.sold.fetch_add(1, Ordering::SeqCst);
        by_block.insert(hash.to_owned(), issued.clone());
        issued
    }

    /// A request carrying a pass token: served, or refused as the filter would.
    fn on_pass(&self, path: &str, group: &str, resource: &str, token: &str) -> Response {
        self.pass_book.presented.fetch_add(1, Ordering::SeqCst);
        let key = pass_key();
        let refusal = match PassToken::open(token, |id| (id == 1).then_some(&key)) {
            Err(r) => Some(r),
            Ok(_) => {
                let mut sold = self.pass_book.passes.lock().unwrap();
                match sold.get_mut(token) {
                    None => Some(PassRefusal::Forged),
                    Some(p) if p.revoked => Some(PassRefusal::Revoked),
                    Some(p) if p.expires_at <= now() => Some(PassRefusal::Expired),
                    Some(p) if p.group != group => Some(PassRefusal::WrongGroup),
                    Some(ShopPass { left: Some(0), .. }) => Some(PassRefusal::Exhausted),
                    Some(p) => {
                        if let Some(l) = p.left.as_mut() {
                            *l -= 1;
                        }
                        None
                    }
                }
            }
        };
        match refusal {
            Some(r) => self.pass_challenge(path, group, resource, r.error()),
            None => {
                self.pass_book.served.fetch_add(1, Ordering::SeqCst);
                reply(
                    StatusCode::OK,
                    vec![],
                    json!({"report": format!("pass content for {resource}")}),
                )
            }
        }
    }
}

/// Requests under a pass route.
pub(super) async fn handle(
    s: &ShopState,
    path: &str,
    group: &str,
    resource: &str,
    headers: &HeaderMap,
) -> Response {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    // A request that carries a payment is a purchase: its token is ignored.
    if let Some(h) = header("payment-signature") {
        return s.pass_purchase(path, group, resource, h).await;
    }
    match header(HEADER) {
        Some(token) => s.on_pass(path, group, resource, token),
        None => s.pass_challenge(path, group, resource, "payment_required"),
    }
}
