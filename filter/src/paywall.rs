//! The browser paywall: when a request on a tagged route prefers `text/html`, the 402 body is a
//! small self-contained page (no external assets) showing the price in XNO, the account, a
//! `nano:` payment URI and its QR code. Its script waits for the payment by re-requesting the
//! same URL with `PAYMENT-SIGNATURE` = base64 of `{x402Version: 2, accepted: <the tagged offer>,
//! payload: {sessionId}}` every 2 s; the sidecar admits it once the watcher has seen an exact
//! send to the session's account, and the page then shows the resource it got back.
//!
//! Why a session id alone may redeem a payment: it is 128 random bits handed only to this
//! requester, it is MAC-bound to the offer, the payment must be a send of exactly the session's
//! unique amount made after the session was issued, and consumption is single-use (the same
//! spent set as signed blocks). Someone watching the ledger sees the amount but never the id.
//!
//! Prepaid passes: on a route that sells them, each pass is an option beside the single
//! request, with its own tagged offer and session (from the pass's own pool); the answer that
//! buys one sets the pass cookie on the page's same-origin fetch, so later loads go on the
//! cookie alone.
//!
//! The QR encoder is ours (inline JavaScript, byte mode, error correction level L, versions 1–10,
//! which covers any `nano:` URI with an amount), so the module carries no QR library.

use crate::config::Price;
use crate::jsontext::push_num;
use crate::pool::Session;
use nanogate_protocol::contract::pass::PassTerms;

/// The `nano:` URI of a payment (amount in raw, as wallets read it).
pub fn payment_uri(address: &str, amount: u128) -> String {
    let mut uri = ["nano:", address, "?amount="].concat();
    push_num(&mut uri, amount);
    uri
}

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 16);
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let rep = match b {
            b'&' => "&amp;",
            b'<' => "&lt;",
            b'>' => "&gt;",
            b'"' => "&quot;",
            b'\'' => "&#39;",
            _ => continue,
        };
        // ASCII delimiters: the slice bounds are always char boundaries.
        o.push_str(s.get(start..i).unwrap_or(""));
        o.push_str(rep);
        start = i + 1;
    }
    o.push_str(s.get(start..).unwrap_or(""));
    o
}

const STYLE: &str = "body{font:16px sans-serif;background:#f4f6f8}main{max-width:28rem;\
margin:2rem auto;background:#fff;padding:1.5rem;border-radius:12px;text-align:center}\
code{word-break:break-all}canvas{margin:1rem auto;display:block}a.b{display:inline-block;padding:.6rem 1.2rem;\
background:#209ce9;color:#fff;border-radius:8px;text-decoration:none}#opts button{display:block;width:100%;\
margin:.3rem 0;padding:.5rem;border:1px solid #209ce9;border-radius:8px;background:#fff}#opts button[aria-pressed=true]{background:#e3f3fd}";

/// The page's script: the QR encoder, then the wait-and-load loop. `D` is the session data.
const SCRIPT: &str = r#"(()=>{
const D=JSON.parse(document.getElementById('ng-data').textContent),$=i=>document.getElementById(i),ab=Math.abs;
function qr(s){const d=[...new TextEncoder().encode(s)];
const T=[0,[7,1,19,0,0],[10,1,34,0,0],[15,1,55,0,0],[20,1,80,0,0],[26,1,108,0,0],[18,2,68,0,0],[20,2,78,0,0],[24,2,97,0,0],[30,2,116,0,0],[18,2,68,2,69]],
A=[0,[],[6,18],[6,22],[6,26],[6,30],[6,34],[6,22,38],[6,24,42],[6,26,46],[6,28,50]];
let v,t,c,i,j,k;for(v=1;v<=10;v++){t=T[v];c=t[1]*t[2]+t[3]*t[4];if(4+(v<10?8:16)+8*d.length<=c*8)break}
if(v>10)return null;
const bb=[],put=(x,n)=>{for(let i=n-1;i>=0;i--)bb.push(x>>>i&1)};
put(4,4);put(d.length,v<10?8:16);d.forEach(b=>put(b,8));put(0,Math.min(4,c*8-bb.length));while(bb.length%8)bb.push(0);
const cw=[];for(i=0;i<bb.length;i+=8){for(k=0,j=0;j<8;j++)k=k<<1|bb[i+j];cw.push(k)}
for(k=236;cw.length<c;k^=253)cw.push(k);
const E=[],L=[];for(i=0,k=1;i<255;i++){E[i]=E[i+255]=k;L[k]=i;k<<=1;if(k&256)k^=285}
const mu=(a,b)=>a&&b?E[L[a]+L[b]]:0,n=t[0];let g=[1];
for(i=0;i<n;i++){const h=g.concat([0]);for(j=0;j<g.length;j++)h[j+1]^=mu(g[j],E[i]);g=h}
const bl=[],ec=[];let o=0;for(let q=0;q<2;q++)for(k=0;k<t[1+2*q];k++){const b=cw.slice(o,o+=t[2+2*q]);bl.push(b);
const r=b.concat(Array(n).fill(0));for(i=0;i<b.length;i++){const x=r[i];if(x)for(j=1;j<=n;j++)r[i+j]^=mu(g[j],x)}ec.push(r.slice(b.length))}
const all=[];for(i=0;i<=t[2];i++)bl.forEach(b=>{if(i<b.length)all.push(b[i])});for(i=0;i<n;i++)ec.forEach(e=>all.push(e[i]));
const N=17+4*v,M=[],F=[];for(i=0;i<N;i++){M.push(Array(N).fill(0));F.push(Array(N).fill(0))}
const S=(x,y,on)=>{M[y][x]=on?1:0;F[y][x]=1};
[[3,3],[N-4,3],[3,N-4]].forEach(([a,b])=>{for(let y=-4;y<=4;y++)for(let x=-4;x<=4;x++){const X=a+x,Y=b+y,m=Math.max(ab(x),ab(y));if(X>=0&&Y>=0&&X<N&&Y<N)S(X,Y,m!=2&&m!=4)}});
for(i=8;i<N-8;i++){S(6,i,i%2==0);S(i,6,i%2==0)}
A[v].forEach(y=>A[v].forEach(x=>{if(x==6&&y==6||x==6&&y==N-7||x==N-7&&y==6)return;for(let a=-2;a<=2;a++)for(let b=-2;b<=2;b++)S(x+b,y+a,Math.max(ab(a),ab(b))!=1)}));
const fmt=m=>{let x=8|m,r=x,i;for(i=0;i<10;i++)r=r<<1^(r>>>9)*1335;const f=(x<<10|r)^21522,B=i=>f>>>i&1;
for(i=0;i<6;i++)S(8,i,B(i));S(8,7,B(6));S(8,8,B(7));S(7,8,B(8));for(i=9;i<15;i++)S(14-i,8,B(i));
for(i=0;i<8;i++)S(N-1-i,8,B(i));for(i=8;i<15;i++)S(8,N-15+i,B(i));S(8,N-8,1)};
fmt(0);
if(v>=7){let r=v;for(i=0;i<12;i++)r=r<<1^(r>>>11)*7973;const vb=v<<12|r;for(i=0;i<18;i++){const b=vb>>>i&1,X=N-11+i%3,Y=i/3|0;S(X,Y,b);S(Y,X,b)}}
for(i=0,k=N-1;k>=1;k-=2){if(k==6)k=5;for(let z=0;z<N;z++)for(j=0;j<2;j++){const x=k-j,y=(k+1&2)==0?N-1-z:z;if(!F[y][x]&&i<all.length*8){M[y][x]=all[i>>>3]>>>7-(i&7)&1;i++}}}
const MF=[(x,y)=>(x+y)%2==0,(x,y)=>y%2==0,x=>x%3==0,(x,y)=>(x+y)%3==0,(x,y)=>((x/3|0)+(y/2|0))%2==0,(x,y)=>x*y%2+x*y%3==0,(x,y)=>(x*y%2+x*y%3)%2==0,(x,y)=>((x+y)%2+x*y%3)%2==0];
const flip=m=>{for(let y=0;y<N;y++)for(let x=0;x<N;x++)if(!F[y][x]&&MF[m](x,y))M[y][x]^=1};
const pen=()=>{let p=0,dk=0,x,y;for(let a=0;a<2;a++)for(y=0;y<N;y++){let run=1;for(x=1;x<N;x++){if((a?M[x][y]:M[y][x])==(a?M[x-1][y]:M[y][x-1])){run++;p+=run==5?3:run>5?1:0}else run=1}}
for(y=0;y<N;y++)for(x=0;x<N;x++){dk+=M[y][x];if(x<N-1&&y<N-1&&M[y][x]==M[y][x+1]&&M[y][x]==M[y+1][x]&&M[y][x]==M[y+1][x+1])p+=3}
return p+10*Math.floor(ab(dk*20/(N*N)-10))};
let best=0,bp=1e9;for(let m=0;m<8;m++){flip(m);fmt(m);const pp=pen();if(pp<bp){bp=pp;best=m}flip(m)}
flip(best);fmt(best);return M}
const cv=$('qr'),draw=u=>{const M=qr(u);if(!M)return;const N=M.length,s=4,W=(N+8)*s,x=cv.getContext('2d');cv.width=cv.height=W;x.fillStyle='#fff';x.fillRect(0,0,W,W);x.fillStyle='#000';
for(let i=0;i<N;i++)for(let j=0;j<N;j++)if(M[i][j])x.fillRect((j+4)*s,(i+4)*s,s,s)};
const xno=r=>{const R=String(r).padStart(31,'0'),F=R.slice(-30).replace(/0+$/,'');return R.slice(0,-30).replace(/^0+(?=.)/,'')+(F?'.'+F:'')+' XNO'};
const O=[D].concat(D.passes||[]),T=[D];let C=D,k=0;
const pick=i=>{C=O[i];if(!T.includes(C))T.push(C);draw(C.uri);const a=$('amount');a.textContent=xno(C.raw);a.setAttribute('data-raw',C.raw);
$('uri').href=C.uri;$('account').textContent=C.payTo;O.forEach((o,j)=>o.b&&o.b.setAttribute('aria-pressed',i==j))};
if(O.length>1)O.forEach((o,i)=>{const b=document.createElement('button');b.id='opt-'+i;b.type='button';if(o.name)b.setAttribute('data-pass',o.name);
b.textContent=(o.name?'Pass '+o.name+' ('+o.grant+')':'This request')+': '+xno(o.raw);b.onclick=()=>pick(i);o.b=b;$('opts').appendChild(b)});
pick(0);
const st=$('status'),state=(s,m)=>{document.body.setAttribute('data-state',s);st.textContent=m},
hdr=o=>btoa(JSON.stringify({x402Version:2,accepted:o.offer,payload:{sessionId:o.id}}));
const show=(r,o)=>r.text().then(t=>{state('paid',o.name?'Pass '+o.name+' bought: this browser keeps it. Loading…':'Paid. Loading…');if((r.headers.get('content-type')||'').includes('text/html')){document.open();document.write(t);document.close()}
else{const m=document.querySelector('main'),p=document.createElement('pre');m.textContent='';if(o.name){const n=document.createElement('p');n.id='nanogate-pass';n.textContent='Pass '+o.name+' bought ('+o.grant+'): reload to use it.';m.appendChild(n)}p.id='nanogate-resource';p.textContent=t;m.appendChild(p)}});
const poll=()=>{const L=T.filter(o=>Date.now()/1e3<o.validBefore);if(!L.length)return state('expired','This payment request has expired; reload the page for a new one.');
const o=L[k++%L.length];fetch(location.href,{headers:{'PAYMENT-SIGNATURE':hdr(o)},cache:'no-store',credentials:'same-origin'}).then(r=>r.ok?show(r,o):setTimeout(poll,2e3),()=>setTimeout(poll,2e3))};
state('waiting','Waiting for the payment…');setTimeout(poll,1e3)})();"#;

/// A prepaid pass the paywall offers beside the single request: its terms, its tagged offer
/// (the `accepts[]` entry, JSON) and the session that offer pays.
pub struct PassChoice<'a> {
    pub terms: &'a PassTerms,
    pub offer: &'a str,
    pub session: &'a Session,
}

/// What a pass grants, for people: `100 requests`, `1 hour`, `30 days`.
fn grant(terms: &PassTerms) -> String {
    let mut out = String::new();
    let (n, unit) = match terms.requests {
        Some(r) => (u64::from(r), "request"),
        None => match terms.seconds {
            s if s % 86_400 == 0 => (s / 86_400, "day"),
            s if s % 3_600 == 0 => (s / 3_600, "hour"),
            s if s % 60 == 0 => (s / 60, "minute"),
            s => (s, "second"),
        },
    };
    push_num(&mut out, u128::from(n));
    out.push(' ');
    out.push_str(unit);
    if n != 1 {
        out.push('s');
    }
    out
}

/// One option's data for the script, a JSON object *without its closing brace* (the caller
/// may add members): every part is hex, digits, an address, a pass name (`[a-z0-9_-]`,
/// checked with the configuration), our own words or the offer's JSON (with `<` escaped).
fn option_data(offer: &str, session: &Session, pass: Option<&PassTerms>) -> String {
    let uri = payment_uri(&session.pay_to, session.amount);
    let mut amount = String::new();
    push_num(&mut amount, session.amount);
    let mut valid_before = String::new();
    push_num(&mut valid_before, u128::from(session.valid_before));
    let mut o = [
        "{\"id\":\"",
        &session.id,
        "\",\"uri\":\"",
        &uri,
        "\",\"payTo\":\"",
        &session.pay_to,
        "\",\"raw\":\"",
        &amount,
        "\",\"validBefore\":",
        &valid_before,
        ",\"offer\":",
        &offer.replace('<', "\\u003c"),
    ]
    .concat();
    if let Some(t) = pass {
        o.push_str(&[",\"name\":\"", &t.name, "\",\"grant\":\"", &grant(t), "\""].concat());
    }
    o
}

/// The paywall page offering the single request (`offer`, `session`) and, beside it, each of
/// `passes`: the visitor picks one, pays it with a wallet, and the page polls every option it
/// was shown with that option's session. A bought pass comes back with its cookie
/// (`Set-Cookie` on the same-origin answer), which the browser keeps and sends on every
/// later load of the pass's routes.
pub fn page_with_passes(
    price: &Price,
    resource: &str,
    offer: &str,
    session: &Session,
    passes: &[PassChoice<'_>],
) -> String {
    let uri = payment_uri(&session.pay_to, session.amount);
    let title = esc(price.description.as_deref().unwrap_or("Payment required"));
    let mut amount = String::new();
    push_num(&mut amount, session.amount);
    let mut data = option_data(offer, session, None);
    if !passes.is_empty() {
        data.push_str(",\"passes\":[");
        for (i, p) in passes.iter().enumerate() {
            if i > 0 {
                data.push(',');
            }
            data.push_str(&option_data(p.offer, p.session, Some(p.terms)));
            data.push('}');
        }
        data.push(']');
    }
    data.push('}');
    let choices = if passes.is_empty() {
        ""
    } else {
        "<p>Pay for this request, or buy a pass for many:</p><p id=\"opts\"></p>"
    };
    [
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" \
content=\"width=device-width,initial-scale=1\"><title>",
        &title,
        "</title><style>",
        STYLE,
        "</style></head><body data-state=\"loading\"><main><h1>",
        &title,
        "</h1><p><code>",
        &esc(resource),
        "</code></p>",
        choices,
        "<p>Pay exactly <b id=\"amount\" data-raw=\"",
        &amount,
        "\">",
        &amount,
        " raw</b> to</p><p><code id=\"account\">",
        &session.pay_to,
        "</code></p><canvas id=\"qr\" width=\"8\" height=\"8\"></canvas><p><a class=\"b\" \
id=\"uri\" href=\"",
        &uri,
        "\">Open in wallet</a></p><p>Send exactly this amount: its last digits identify you.</p><p id=\"status\">Loading…</p></main><script id=\"ng-data\" \
type=\"application/json\">",
        &data,
        "</script><script>",
        SCRIPT,
        "</script></body></html>",
    ]
    .concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_escapes_everything_it_embeds() {
        let cfg = crate::config::parse(
            serde_json::json!({
                "sidecar": {"cluster": "c", "authority": "a", "secret": "0123456789abcdef"},
                "network": "nano:devnet",
                "payTo": "nano_3xc8mafayqu1ae8myqw9o9dizmz5mhqnzf1dx1jdrs6apgm8g8stucek1rzc",
                "routes": [{"path": {"prefix": "/p/"}, "price": "0.001", "tagged": true,
                            "description": "<script>alert(1)</script>"}]
            })
            .to_string()
            .as_bytes(),
        )
        .expect("config");
        let crate::config::RouteKind::Paid(p) = &cfg.routes[0].kind else {
            panic!("paid")
        };
        let s = Session {
            id: "00112233445566778899aabbccddeeff".into(),
            pay_to: p.pay_to.address.clone(),
            amount: p.amount_raw + 42,
            valid_before: 99,
            key_id: 1,
            mac: "ab".repeat(32),
        };
        let offer = crate::challenge::session_offer_json(&cfg.network, p, &s, None);
        let v: serde_json::Value = serde_json::from_str(&offer).expect("offer is JSON");
        assert_eq!(v["extra"]["nanoSession"]["tagAmountRaw"], "42");
        assert_eq!(v["amount"], (p.amount_raw + 42).to_string());
        let html = page_with_passes(p, "http://h/p/</script><b>", &offer, &s, &[]);
        assert!(!html.contains("<script>alert"));
        assert!(!html.contains("</script><b>"));
        assert!(html.contains(&format!(
            "nano:{}?amount={}",
            p.pay_to.address,
            p.amount_raw + 42
        )));
        assert!(html.contains(&format!("data-raw=\"{}\"", p.amount_raw + 42)));
        assert!(
            !html.contains("http://") || !html.contains("src=\"http"),
            "no external assets"
        );
        assert!(html.len() < 9_000, "the page stays small: {}", html.len());
        // `NANOGATE_DUMP_PAYWALL=/tmp/p.html cargo test -p nanogate-filter page_` writes the
        // page out, to look at it in a browser.
        if let Ok(path) = std::env::var("NANOGATE_DUMP_PAYWALL") {
            let _ = std::fs::write(path, &html);
        }

        // With passes: each is an option of its own, with its own session and offer.
        let hour = PassTerms {
            name: "hour".into(),
            group: "api".into(),
            seconds: 3600,
            requests: None,
        };
        let hundred = PassTerms {
            name: "hundred".into(),
            group: "api".into(),
            seconds: 2_592_000,
            requests: Some(100),
        };
        let s2 = Session {
            id: "ffeeddccbbaa99887766554433221100".into(),
            amount: 10 * p.amount_raw + 7,
            ..s.clone()
        };
        let s3 = Session {
            id: "0f0e0d0c0b0a09080706050403020100".into(),
            amount: 50 * p.amount_raw + 9,
            ..s.clone()
        };
        let o2 = r#"{"amount":"1","extra":{"pass":{"name":"hour"},"x":"</script><b>"}}"#;
        let choices = [
            PassChoice {
                terms: &hour,
                offer: o2,
                session: &s2,
            },
            PassChoice {
                terms: &hundred,
                offer: "{}",
                session: &s3,
            },
        ];
        let html = page_with_passes(p, "http://h/p/x", &offer, &s, &choices);
        assert!(!html.contains("</script><b>"));
        let start = html.find("application/json\">").expect("data") + 18;
        let end = start + html[start..].find("</script>").expect("end of data");
        let data: serde_json::Value = serde_json::from_str(&html[start..end]).expect("data JSON");
        assert_eq!(data["id"], s.id.as_str());
        assert_eq!(data["payTo"], s.pay_to.as_str());
        let passes = data["passes"].as_array().expect("passes");
        assert_eq!(passes.len(), 2);
        assert_eq!(passes[0]["name"], "hour");
        assert_eq!(passes[0]["grant"], "1 hour");
        assert_eq!(passes[0]["id"], s2.id.as_str());
        assert_eq!(passes[0]["raw"], (10 * p.amount_raw + 7).to_string());
        assert_eq!(passes[0]["offer"]["extra"]["x"], "</script><b>");
        assert_eq!(
            passes[0]["uri"],
            payment_uri(&s2.pay_to, s2.amount).as_str()
        );
        assert_eq!(passes[1]["grant"], "100 requests");
        assert!(html.contains("id=\"opts\""));
        assert!(html.len() < 12_000, "the page stays small: {}", html.len());
    }

    #[test]
    fn grants_read_as_people_say_them() {
        let t = |seconds, requests| PassTerms {
            name: "p".into(),
            group: "g".into(),
            seconds,
            requests,
        };
        assert_eq!(grant(&t(3600, None)), "1 hour");
        assert_eq!(grant(&t(7200, None)), "2 hours");
        assert_eq!(grant(&t(86_400 * 30, None)), "30 days");
        assert_eq!(grant(&t(90, None)), "90 seconds");
        assert_eq!(grant(&t(600, None)), "10 minutes");
        assert_eq!(grant(&t(600, Some(1))), "1 request");
        assert_eq!(grant(&t(600, Some(100))), "100 requests");
    }
}
