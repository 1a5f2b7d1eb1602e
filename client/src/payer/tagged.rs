//! `--mechanism tagged`: pays a tagged-session offer (a session-bound tagged amount) the way an
//! ordinary wallet would. The offer's `amount` is the price plus a session tag; we sign
//! a send of exactly that amount to `payTo`, **publish it ourselves** (`process`), wait until
//! the ledger confirms it, then present `{"proof": <block hash>, "sessionId": <extra.nonce>}`
//! with the offer echoed as `accepted`.
//!
//! Such a payment is not journalled for re-presentation: once published it is spent whatever
//! happens to the HTTP exchange. If the answer is lost, present the same session and hash
//! again while the session is valid (both are printed on stderr); the server then applies its
//! redemption rules (the upstream failed → served again; otherwise `already_spent`).

use super::response::names_ours;
use super::{PaidResponse, PayError, Payer, PaymentInfo, Progress, RequestSpec};
use crate::offer::{parse_challenge, usable_offer, Challenge, Offer};
use crate::pass::{is_pass_offer, select_pass};
use crate::payment::build_send_block;
use crate::rpc::BlockStatus;
use nanogate_protocol::challenge;
use nanogate_protocol::contract::Mechanism;
use nanogate_protocol::nano::{BlockHash, StateBlock};
use nanogate_protocol::x402::{encode_header, headers, payload_keys};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// How long we wait for our own send to confirm before giving up (the session's validity
/// bounds it too).
const CONFIRM_WAIT: Duration = Duration::from_secs(60);

/// The tagged session offer of the pass `name` (as [`select_pass`] chooses) and its session id.
pub fn tagged_pass_offer(
    challenge: &Challenge,
    max_raw: u128,
    name: &str,
) -> Result<(Offer, String), PayError> {
    let p = select_pass(challenge, name, max_raw, tagged_session_offer)?;
    let id = session_id(&p.offer.raw).unwrap_or_default();
    Ok((p.offer, id))
}

/// The session offer of a challenge: `extra.mechanism == "tagged"` with a session id (never a
/// pass offer: see [`tagged_pass_offer`]).
pub fn tagged_offer(challenge: &Challenge, max_raw: u128) -> Result<(Offer, String), PayError> {
    let mut reasons = Vec::new();
    for (i, raw) in challenge.accepts.iter().enumerate() {
        if is_pass_offer(raw) {
            continue;
        }
        let extra = raw.get("extra");
        let tagged = extra
            .and_then(|e| e.get(challenge::EXTRA_MECHANISM))
            .and_then(Value::as_str)
            .and_then(|m| m.parse().ok())
            == Some(Mechanism::TaggedSession);
        if !tagged {
            continue;
        }
        match tagged_session_offer(i, raw) {
            Ok(o) if o.amount <= max_raw => {
                let id = session_id(raw).unwrap_or_default();
                return Ok((o, id));
            }
            Ok(o) => reasons.push(format!(
                "offer {i}: {} raw is more than the maximum {max_raw}",
                o.amount
            )),
            Err(e) => reasons.push(format!("offer {i}: {e}")),
        }
    }
    if reasons.is_empty() {
        reasons.push("the server offers no tagged session (only signed blocks?)".into());
    }
    Err(PayError::NoUsableOffer { reasons })
}

/// The session id of a tagged offer (`extra.nonce`, 32 hex), lower case.
fn session_id(raw: &Value) -> Option<String> {
    raw.get("extra")
        .and_then(|e| e.get(challenge::EXTRA_NONCE))
        .and_then(Value::as_str)
        .filter(|s| s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_ascii_lowercase)
}

/// A tagged offer (pass or not) this client can pay: a session id, then scheme, network,
/// asset, amount and payee judged like any offer, without the mechanism marker (which
/// `usable_offer` reserves for signed blocks). The offer keeps the server's JSON verbatim.
fn tagged_session_offer(index: usize, raw: &Value) -> Result<Offer, String> {
    let tagged = raw
        .get("extra")
        .and_then(|e| e.get(challenge::EXTRA_MECHANISM))
        .and_then(Value::as_str)
        .and_then(|m| m.parse().ok())
        == Some(Mechanism::TaggedSession);
    if !tagged {
        return Err("not a tagged session (pay it with --mechanism block)".into());
    }
    if session_id(raw).is_none() {
        return Err("no session id in extra.nonce".into());
    }
    let mut plain = raw.clone();
    if let Some(e) = plain.get_mut("extra").and_then(Value::as_object_mut) {
        e.retain(|k, _| k == challenge::EXTRA_VALID_BEFORE);
    }
    let mut o = usable_offer(index, &plain)?;
    o.raw = raw.clone();
    Ok(o)
}

/// The `PAYMENT-SIGNATURE` value presenting `hash` for the session of `offer`.
pub fn tagged_header(
    offer: &Offer,
    session: &str,
    hash: &BlockHash,
    resource: Option<&Value>,
) -> String {
    let mut v = json!({
        "x402Version": 2,
        "accepted": offer.raw,
        "payload": {payload_keys::PROOF: hash.to_hex(), payload_keys::SESSION_ID: session},
    });
    if let Some(r) = resource {
        v["resource"] = r.clone();
    }
    encode_header(&v)
}

impl Payer {
    /// Pays `challenge`'s tagged offer by broadcasting our own send, then presents it.
    pub(super) async fn pay_tagged(
        &self,
        req: &RequestSpec,
        url: &reqwest::Url,
        key: &str,
        challenge: &Challenge,
    ) -> Result<PaidResponse, PayError> {
        let (offer, session) = match &self.config.pass {
            Some(name) => tagged_pass_offer(challenge, self.config.max_raw, name)?,
            None => tagged_offer(challenge, self.config.max_raw)?,
        };
        self.progress(Progress::Challenge {
            amount: offer.amount,
            pay_to: offer.pay_to.clone(),
            url: url.to_string(),
        });
        self.progress(Progress::Note(format!(
            "tagged session {session}: sending exactly {} raw (price + tag)",
            offer.amount
        )));
        let (info, work) = self.prepare_send(&offer, None).await?;
        let block = build_send_block(
            &offer.pay_to_key,
            offer.amount,
            &info,
            &self.config.key,
            work,
        )?;
        let hash = block.hash();
        self.progress(Progress::Paying {
            hash: hash.to_hex(),
        });
        self.publish(&block).await?;
        self.await_confirmation(&hash, &offer, &session).await?;
        self.progress(Progress::Note(format!(
            "send {hash} confirmed; presenting it with session {session}"
        )));
        self.present_tagged(req, key, challenge, &offer, &session, &hash)
            .await
    }

    /// Publishes our send (`process`); the node's refusal is final.
    async fn publish(&self, block: &StateBlock) -> Result<(), PayError> {
        let published = self
            .rpc
            .call(
                "process",
                json!({"json_block": "true", "subtype": "send", "block": block.to_json()}),
            )
            .await?;
        match published.get("error").and_then(Value::as_str) {
            Some(e) => Err(PayError::Refused {
                reason: format!("the node refused our send: {e}"),
                status: 0,
                hash: Some(block.hash().to_hex()),
            }),
            None => Ok(()),
        }
    }

    /// Waits for the ledger to confirm our send (the server admits only a confirmed one),
    /// nudging the node once; gives up at [`CONFIRM_WAIT`] or the session's expiry.
    async fn await_confirmation(
        &self,
        hash: &BlockHash,
        offer: &Offer,
        session: &str,
    ) -> Result<(), PayError> {
        let valid_before = offer
            .raw
            .get("extra")
            .and_then(|e| e.get(challenge::EXTRA_VALID_BEFORE))
            .and_then(Value::as_u64)
            .unwrap_or(u64::MAX);
        let deadline = Instant::now() + CONFIRM_WAIT;
        let mut nudged = false;
        loop {
            if self.rpc.block_status(hash).await? == BlockStatus::Confirmed {
                return Ok(());
            }
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            if Instant::now() > deadline || now >= valid_before {
                return Err(PayError::PaymentPending {
                    hash: hash.to_hex(),
                    reason: format!(
                        "our send is published but not confirmed yet; present session {session} \
                         with it once it is"
                    ),
                });
            }
            if !nudged {
                let _ = self
                    .rpc
                    .call("block_confirm", json!({"hash": hash.to_hex()}))
                    .await;
                nudged = true;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Presents the confirmed send with its session. It is spent whatever the answer, so a
    /// refusal is [`PayError::PaidButRefused`].
    async fn present_tagged(
        &self,
        req: &RequestSpec,
        key: &str,
        challenge: &Challenge,
        offer: &Offer,
        session: &str,
        hash: &BlockHash,
    ) -> Result<PaidResponse, PayError> {
        let value = tagged_header(offer, session, hash, challenge.resource.as_ref());
        let resp = self
            .send(req, Some((headers::PAYMENT_SIGNATURE, value)))
            .await
            .map_err(|message| PayError::Http {
                message,
                hash: Some(hash.to_hex()),
            })?;
        let receipt = resp.receipt().and_then(Result::ok);
        if resp.is_refusal() {
            let reason = parse_challenge(resp.header(headers::PAYMENT_REQUIRED), &resp.body)
                .ok()
                .and_then(|c| c.error)
                .unwrap_or_else(|| format!("HTTP {} without a reason", resp.status));
            return Err(PayError::PaidButRefused {
                hash: hash.to_hex(),
                amount: offer.amount,
                pay_to: offer.pay_to.clone(),
                reason,
            });
        }
        let matches = names_ours(receipt.as_ref(), &[hash.to_hex()]);
        let mut bought = None;
        if resp.is_success() {
            self.progress(Progress::Confirmed {
                hash: hash.to_hex(),
            });
            if matches {
                // Nothing journalled to forget: a published send is not re-presented.
                bought = self.keep_bought_pass(
                    req,
                    key,
                    &hash.to_hex(),
                    offer.amount,
                    receipt.as_ref(),
                )?;
            }
        }
        let info = PaymentInfo {
            hash: hash.to_hex(),
            amount_raw: offer.amount,
            network: offer.network.clone(),
            pay_to: offer.pay_to.clone(),
            payer: self.account.to_address(),
            re_presented: false,
        };
        let mut paid = PaidResponse::paid(resp, receipt, info, matches);
        paid.pass = bought;
        Ok(paid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offer::{ChallengeSource, ChallengeVersion};

    const PAY_TO: &str = "nano_3xc8mafayqu1ae8myqw9o9dizmz5mhqnzf1dx1jdrs6apgm8g8stucek1rzc";

    fn challenge(accepts: Vec<Value>) -> Challenge {
        Challenge {
            version: ChallengeVersion::V2,
            source: ChallengeSource::Header,
            error: None,
            resource: None,
            extensions: None,
            accepts,
        }
    }

    fn offer(amount: &str, mechanism: &str) -> Value {
        json!({"scheme": "exact", "network": "nano:devnet", "asset": "XNO", "amount": amount,
               "payTo": PAY_TO, "maxTimeoutSeconds": 600,
               "extra": {"mechanism": mechanism, "nonce": "00112233445566778899aabbccddeeff",
                         "validBefore": 99, "keyId": 1, "mac": "ab".repeat(32)}})
    }

    #[test]
    fn picks_the_tagged_offer_and_keeps_it_verbatim() {
        let c = challenge(vec![offer("1000", "block"), offer("1042", "tagged")]);
        let (o, id) = tagged_offer(&c, 10_000).expect("tagged");
        assert_eq!(o.amount, 1042);
        assert_eq!(o.index, 1);
        assert_eq!(id, "00112233445566778899aabbccddeeff");
        assert_eq!(o.raw["extra"]["mac"], json!("ab".repeat(32)));
        let h = tagged_header(&o, &id, &BlockHash([1; 32]), None);
        let v: Value = serde_json::from_slice(
            &nanogate_protocol::x402::decode_header_bytes(&h, 1 << 16).expect("base64"),
        )
        .expect("json");
        assert_eq!(v["payload"]["sessionId"], json!(id));
        assert_eq!(v["accepted"], c.accepts[1]);
    }

    #[test]
    fn a_tagged_pass_offer_is_taken_only_with_its_name() {
        let mut pass = offer("5042", "tagged");
        pass["extra"]["pass"] = json!({"name": "hour", "group": "api", "seconds": 3600});
        pass["extra"]["nonce"] = json!("ffeeddccbbaa99887766554433221100");
        let c = challenge(vec![
            offer("1000", "block"),
            pass.clone(),
            offer("1042", "tagged"),
        ]);
        // Without --pass the single request's session is paid, never the pass.
        let (o, _) = tagged_offer(&c, 10_000).expect("tagged");
        assert_eq!(o.index, 2);
        let (o, id) = tagged_pass_offer(&c, 10_000, "hour").expect("the pass");
        assert_eq!((o.index, o.amount), (1, 5042));
        assert_eq!(id, "ffeeddccbbaa99887766554433221100");
        assert_eq!(o.raw, pass, "echoed verbatim");
        assert!(matches!(
            tagged_pass_offer(&c, 5041, "hour"),
            Err(PayError::OverMax { .. })
        ));
        // A signed-block pass offer is not a tagged one.
        let mut signed = offer("5000", "block");
        signed["extra"]["pass"] = json!({"name": "day", "group": "api", "seconds": 86400});
        let e = tagged_pass_offer(&challenge(vec![signed]), 10_000, "day")
            .expect_err("a signed-block pass offer");
        assert!(e.to_string().contains("not a tagged session"), "{e}");
    }

    #[test]
    fn refuses_over_the_maximum_or_without_a_session() {
        let c = challenge(vec![offer("1042", "tagged")]);
        assert!(tagged_offer(&c, 1041).is_err());
        let c = challenge(vec![offer("1000", "block")]);
        assert!(tagged_offer(&c, 10_000).is_err());
        let mut o = offer("1042", "tagged");
        o["extra"]["nonce"] = json!("xyz");
        assert!(tagged_offer(&challenge(vec![o]), 10_000).is_err());
    }
}
