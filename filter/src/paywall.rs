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
//! The QR encoder is ours (inline JavaScript, byte mode, error correction level L, versions 1–10,
//! which covers any `nano:` URI with an amount), so the module carries no QR library.

use crate::config::Price;
use crate::tagged::Session;

/// Raw as an XNO decimal string (all 30 decimals when needed, trailing zeros trimmed). String
/// work only: u128 division and padded formatting would cost the module kilobytes.
pub fn format_xno(raw: u128) -> String {
    let digits = raw.to_string();
    let (int, frac) = if digits.len() > 30 {
        digits.split_at(digits.len() - 30)
    } else {
        ("0", digits.as_str())
    };
    let zeros = 30 - frac.len();
    let frac = frac.trim_end_matches('0');
    if frac.is_empty() {
        return int.to_owned();
    }
    let mut out = String::with_capacity(64);
    out.push_str(int);
    out.push('.');
    out.extend(std::iter::repeat_n('0', zeros));
    out.push_str(frac);
    out
}

/// The `nano:` URI of a payment (amount in raw, as wallets read it).
pub fn payment_uri(address: &str, amount: u128) -> String {
    format!("nano:{address}?amount={amount}")
}

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

const STYLE: &str = "body{font:16px system-ui,sans-serif;margin:0;background:#f4f6f8;color:#222}\
main{max-width:28rem;margin:2rem auto;background:#fff;padding:1.5rem;border-radius:12px;\
box-shadow:0 2px 8px #0002;text-align:center}code{word-break:break-all;font-size:.85rem}\
canvas{image-rendering:pixelated;margin:1rem auto;display:block}a.b{display:inline-block;\
padding:.6rem 1.2rem;background:#209ce9;color:#fff;border-radius:8px;text-decoration:none}";

/// The page's script: the QR encoder, then the wait-and-load loop. `D` is the session data.
const SCRIPT: &str = r#"(function(){
var D=JSON.parse(document.getElementById('ng-data').textContent);
function qr(s){var d=Array.from(new TextEncoder().encode(s));
var T=[0,[7,1,19,0,0],[10,1,34,0,0],[15,1,55,0,0],[20,1,80,0,0],[26,1,108,0,0],[18,2,68,0,0],[20,2,78,0,0],[24,2,97,0,0],[30,2,116,0,0],[18,2,68,2,69]];
var A=[0,[],[6,18],[6,22],[6,26],[6,30],[6,34],[6,22,38],[6,24,42],[6,26,46],[6,28,50]];
var v,t,cap;for(v=1;v<=10;v++){t=T[v];cap=t[1]*t[2]+t[3]*t[4];if(4+(v<10?8:16)+8*d.length<=cap*8)break}
if(v>10)return null;
var bb=[];function put(x,n){for(var i=n-1;i>=0;i--)bb.push(x>>>i&1)}
put(4,4);put(d.length,v<10?8:16);d.forEach(function(b){put(b,8)});
put(0,Math.min(4,cap*8-bb.length));while(bb.length%8)bb.push(0);
var cw=[],i,j,k;for(i=0;i<bb.length;i+=8){for(k=0,j=0;j<8;j++)k=k<<1|bb[i+j];cw.push(k)}
for(k=0xEC;cw.length<cap;k^=0xFD)cw.push(k);
var E=[],L=[];for(i=0,k=1;i<255;i++){E[i]=E[i+255]=k;L[k]=i;k<<=1;if(k&256)k^=0x11D}
function mu(a,b){return a&&b?E[L[a]+L[b]]:0}
var n=t[0],g=[1];for(i=0;i<n;i++){var h=g.concat([0]);for(j=0;j<g.length;j++)h[j+1]^=mu(g[j],E[i]);g=h}
var bl=[],ec=[],o=0;for(var q=0;q<2;q++)for(k=0;k<t[1+2*q];k++){var b=cw.slice(o,o+t[2+2*q]);o+=b.length;bl.push(b);
var r=b.concat(new Array(n).fill(0));for(i=0;i<b.length;i++){var c=r[i];if(c)for(j=1;j<=n;j++)r[i+j]^=mu(g[j],c)}ec.push(r.slice(b.length))}
var all=[];for(i=0;i<t[2]+1;i++)bl.forEach(function(b){if(i<b.length)all.push(b[i])});
for(i=0;i<n;i++)ec.forEach(function(e){all.push(e[i])});
var N=17+4*v,M=[],F=[];for(i=0;i<N;i++){M.push(new Array(N).fill(0));F.push(new Array(N).fill(0))}
function S(x,y,on){M[y][x]=on?1:0;F[y][x]=1}
[[3,3],[N-4,3],[3,N-4]].forEach(function(p){for(var y=-4;y<=4;y++)for(var x=-4;x<=4;x++){var X=p[0]+x,Y=p[1]+y;if(X<0||Y<0||X>=N||Y>=N)continue;var m=Math.max(Math.abs(x),Math.abs(y));S(X,Y,m!=2&&m!=4)}});
for(i=8;i<N-8;i++){S(6,i,i%2==0);S(i,6,i%2==0)}
A[v].forEach(function(y){A[v].forEach(function(x){if(x==6&&y==6||x==6&&y==N-7||x==N-7&&y==6)return;for(var a=-2;a<=2;a++)for(var c=-2;c<=2;c++)S(x+c,y+a,Math.max(Math.abs(a),Math.abs(c))!=1)})});
function fmt(m){var x=8|m,r=x;for(var i=0;i<10;i++)r=r<<1^(r>>>9)*0x537;var f=(x<<10|r)^0x5412;function B(i){return f>>>i&1}
for(i=0;i<6;i++)S(8,i,B(i));S(8,7,B(6));S(8,8,B(7));S(7,8,B(8));for(i=9;i<15;i++)S(14-i,8,B(i));
for(i=0;i<8;i++)S(N-1-i,8,B(i));for(i=8;i<15;i++)S(8,N-15+i,B(i));S(8,N-8,1)}
fmt(0);
if(v>=7){var r=v;for(i=0;i<12;i++)r=r<<1^(r>>>11)*0x1F25;var vb=v<<12|r;for(i=0;i<18;i++){var bt=vb>>>i&1,X=N-11+i%3,Y=i/3|0;S(X,Y,bt);S(Y,X,bt)}}
for(i=0,k=N-1;k>=1;k-=2){if(k==6)k=5;for(var z=0;z<N;z++)for(j=0;j<2;j++){var x=k-j,y=(k+1&2)==0?N-1-z:z;if(!F[y][x]&&i<all.length*8){M[y][x]=all[i>>>3]>>>7-(i&7)&1;i++}}}
var MF=[function(x,y){return(x+y)%2==0},function(x,y){return y%2==0},function(x){return x%3==0},function(x,y){return(x+y)%3==0},function(x,y){return((x/3|0)+(y/2|0))%2==0},function(x,y){return x*y%2+x*y%3==0},function(x,y){return(x*y%2+x*y%3)%2==0},function(x,y){return((x+y)%2+x*y%3)%2==0}];
function flip(m){for(var y=0;y<N;y++)for(var x=0;x<N;x++)if(!F[y][x]&&MF[m](x,y))M[y][x]^=1}
function pen(){var p=0,dk=0,x,y;for(var a=0;a<2;a++)for(y=0;y<N;y++){var run=1;for(x=1;x<N;x++){var c=a?M[x][y]:M[y][x],pc=a?M[x-1][y]:M[y][x-1];if(c==pc){run++;if(run==5)p+=3;else if(run>5)p++}else run=1}}
for(y=0;y<N;y++)for(x=0;x<N;x++){dk+=M[y][x];if(x<N-1&&y<N-1&&M[y][x]==M[y][x+1]&&M[y][x]==M[y+1][x]&&M[y][x]==M[y+1][x+1])p+=3}
return p+10*Math.floor(Math.abs(dk*20/(N*N)-10))}
var best=0,bp=1e9;for(var m=0;m<8;m++){flip(m);fmt(m);var pp=pen();if(pp<bp){bp=pp;best=m}flip(m)}
flip(best);fmt(best);return M}
function draw(){var M=qr(D.uri),c=document.getElementById('qr');if(!M)return;var N=M.length,s=4,W=(N+8)*s;c.width=c.height=W;
var x=c.getContext('2d');x.fillStyle='#fff';x.fillRect(0,0,W,W);x.fillStyle='#000';
for(var i=0;i<N;i++)for(var j=0;j<N;j++)if(M[i][j])x.fillRect((j+4)*s,(i+4)*s,s,s)}
draw();
var st=document.getElementById('status');function state(s,m){document.body.setAttribute('data-state',s);st.textContent=m}
var hdr=btoa(JSON.stringify({x402Version:2,accepted:D.offer,payload:{sessionId:D.id}}));
function show(r){return r.text().then(function(t){var ct=r.headers.get('content-type')||'';state('paid','Paid. Loading…');
if(ct.indexOf('text/html')>=0){document.open();document.write(t);document.close()}
else{var m=document.querySelector('main');m.textContent='';var p=document.createElement('pre');p.id='nanogate-resource';p.textContent=t;m.appendChild(p);document.body.setAttribute('data-state','paid')}})}
function poll(){if(Date.now()/1000>D.validBefore){state('expired','This payment request has expired; reload the page for a new one.');return}
fetch(location.href,{headers:{'PAYMENT-SIGNATURE':hdr},cache:'no-store',credentials:'same-origin'}).then(function(r){
if(r.ok)return show(r);setTimeout(poll,2000)},function(){setTimeout(poll,2000)})}
state('waiting','Waiting for the payment…');setTimeout(poll,1000)})();"#;

/// The paywall page for one session; `offer` is the tagged `accepts[]` entry (JSON).
pub fn page(price: &Price, resource: &str, offer: &str, session: &Session) -> String {
    let uri = payment_uri(&session.pay_to, session.amount);
    let title = esc(price.description.as_deref().unwrap_or("Payment required"));
    let amount = session.amount.to_string();
    // Data for the script; every part is hex, digits, an address or the offer's JSON.
    let data = [
        "{\"id\":\"",
        &session.id,
        "\",\"uri\":\"",
        &uri,
        "\",\"validBefore\":",
        &session.valid_before.to_string(),
        ",\"offer\":",
        &offer.replace('<', "\\u003c"),
        "}",
    ]
    .concat();
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
        "</code></p><p>Pay exactly <b id=\"amount\" data-raw=\"",
        &amount,
        "\">",
        &format_xno(session.amount),
        " XNO</b> to</p><p><code id=\"account\">",
        &esc(&session.pay_to),
        "</code></p><canvas id=\"qr\" width=\"8\" height=\"8\"></canvas><p><a class=\"b\" \
id=\"uri\" href=\"",
        &esc(&uri),
        "\">Open in wallet</a></p><p><small>The last digits of the amount identify your payment: \
send it exactly.</small></p><p id=\"status\">Loading…</p></main><script id=\"ng-data\" \
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
    fn xno_amounts_keep_every_raw_digit() {
        const XNO_RAW: u128 = 1_000_000_000_000_000_000_000_000_000_000;
        assert_eq!(format_xno(0), "0");
        assert_eq!(
            format_xno(12 * XNO_RAW + 5),
            "12.000000000000000000000000000005"
        );
        assert_eq!(format_xno(XNO_RAW / 1000), "0.001");
        assert_eq!(
            format_xno(XNO_RAW / 1000 + 123),
            "0.001000000000000000000000000123"
        );
        assert_eq!(format_xno(2 * XNO_RAW), "2");
        assert_eq!(format_xno(1), "0.000000000000000000000000000001");
    }

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
        let offer = s.offer_json(&cfg, p);
        let v: serde_json::Value = serde_json::from_str(&offer).expect("offer is JSON");
        assert_eq!(v["extra"]["nanoSession"]["tagAmountRaw"], "42");
        assert_eq!(v["amount"], (p.amount_raw + 42).to_string());
        let html = page(p, "http://h/p/</script><b>", &offer, &s);
        assert!(!html.contains("<script>alert"));
        assert!(!html.contains("</script><b>"));
        assert!(html.contains(&format!(
            "nano:{}?amount={}",
            p.pay_to.address,
            p.amount_raw + 42
        )));
        assert!(html.contains("0.001000000000000000000000000042 XNO"));
        assert!(
            !html.contains("http://") || !html.contains("src=\"http"),
            "no external assets"
        );
        assert!(html.len() < 9_000, "the page stays small: {}", html.len());
    }
}
