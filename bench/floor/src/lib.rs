//! The floor for `cargo xtask bench`: a proxy-wasm module that does the least a wasm HTTP
//! filter can do, so the filter's own cost is measured against Envoy's cost of running *any*
//! wasm filter rather than against Envoy alone. Built by the bench, never shipped.
//!
//! Its plugin configuration is plain text, parsed once at configure time:
//!
//! ```text
//! reply 402            answer every request with this status, these headers and this body
//! name: value          (one response header per line)
//!                      (a blank line)
//! body bytes…          (everything after the blank line, verbatim)
//! ```
//!
//! or `pass NAME`: read request header NAME (as our filter reads the payment header on a free
//! route) and let the request continue;
//!
//! or `call CLUSTER BYTES` followed by header lines (`:method: POST`, `:path: …`, one per
//! line, as our filter's pay call carries them): pause the request, send CLUSTER those headers
//! and a body of BYTES bytes, read the answer's headers and body, and let the request continue:
//! the least a filter that asks a service once per request costs (our paid path without its
//! own work).
//!
//! `reply 402` may name steps after the status (`reply 402 headers time metric random`): the
//! hostcalls our filter makes on its 402 path, made once per request before the reply, so the
//! bench can price each one (`nanogate-bench --only steps`): `headers` reads every request
//! header (one `get_map_bytes`), `time` the clock, `metric` increments a counter, `random` draws
//! 16 bytes from the host's random source.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MapType, MetricType};
use std::rc::Rc;

/// What every request gets, decided once by the plugin configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    Reply {
        status: u32,
        steps: Vec<Step>,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    Pass {
        header: String,
    },
    Call {
        cluster: String,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
}

/// One hostcall made per request before the reply (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Headers,
    Time,
    Metric,
    Random,
}

impl Step {
    fn parse(word: &str) -> Result<Step, String> {
        match word {
            "headers" => Ok(Step::Headers),
            "time" => Ok(Step::Time),
            "metric" => Ok(Step::Metric),
            "random" => Ok(Step::Random),
            _ => Err(format!("unknown step `{word}`")),
        }
    }
}

/// Parses the configuration described in the module docs.
pub fn parse(config: &[u8]) -> Result<Mode, String> {
    let text = std::str::from_utf8(config).map_err(|_| "configuration is not UTF-8")?;
    let (first, rest) = text.split_once('\n').unwrap_or((text, ""));
    let mut words = first.split_whitespace();
    match (words.next(), words.next()) {
        (Some("call"), Some(cluster)) => {
            let bytes = words.next().unwrap_or_default();
            let n = bytes
                .parse::<usize>()
                .map_err(|_| format!("bad body size `{bytes}`"))?;
            Ok(Mode::Call {
                cluster: cluster.to_owned(),
                headers: header_lines(rest)?,
                body: vec![b'x'; n],
            })
        }
        (Some("pass"), Some(header)) if words.next().is_none() => Ok(Mode::Pass {
            header: header.to_ascii_lowercase(),
        }),
        (Some("reply"), Some(status)) => {
            let steps = words.map(Step::parse).collect::<Result<_, _>>()?;
            let status = status
                .parse::<u32>()
                .ok()
                .filter(|s| (200..600).contains(s))
                .ok_or_else(|| format!("bad status `{status}`"))?;
            let (head, body) = rest.split_once("\n\n").unwrap_or((rest, ""));
            let headers = header_lines(head)?;
            Ok(Mode::Reply {
                status,
                steps,
                headers,
                body: body.as_bytes().to_vec(),
            })
        }
        _ => Err(format!(
            "first line must be `reply STATUS`, `pass HEADER` or `call CLUSTER BYTES`, got `{first}`"
        )),
    }
}

/// `name: value` lines (a pseudo-header's leading `:` is part of its name).
fn header_lines(text: &str) -> Result<Vec<(String, String)>, String> {
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let at = l.get(1..).and_then(|r| r.find(": ")).map(|i| i + 1);
            at.map(|i| (l[..i].to_owned(), l[i + 2..].to_owned()))
                .ok_or_else(|| format!("bad header line `{l}`"))
        })
        .collect()
}

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root(None)) });
}}

/// The mode, and the counter the `metric` step increments.
struct Shared {
    mode: Mode,
    metric: u32,
}

struct Root(Option<Rc<Shared>>);

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let parsed = parse(&self.get_plugin_configuration().unwrap_or_default());
        match parsed {
            Ok(mode) => {
                let metric =
                    proxy_wasm::hostcalls::define_metric(MetricType::Counter, "floor_replies")
                        .unwrap_or(0);
                self.0 = Some(Rc::new(Shared { mode, metric }));
                true
            }
            Err(e) => {
                proxy_wasm::hostcalls::log(LogLevel::Critical, &format!("floor: {e}")).ok();
                false
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Http(self.0.clone()?)))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Http(Rc<Shared>);

impl Context for Http {
    fn on_http_call_response(&mut self, _token: u32, _headers: usize, _body: usize, _t: usize) {
        // Read the answer (our filter reads its status, one header and the body), then go on.
        let _ = self.get_http_call_response_headers();
        let _ = self.get_http_call_response_body(0, 4096);
        self.resume_http_request();
    }
}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        match &self.0.mode {
            Mode::Reply {
                status,
                steps,
                headers,
                body,
            } => {
                for step in steps {
                    self.step(*step);
                }
                let headers: Vec<(&str, &str)> = headers
                    .iter()
                    .map(|(n, v)| (n.as_str(), v.as_str()))
                    .collect();
                self.send_http_response(*status, headers, Some(body));
                Action::Pause
            }
            Mode::Pass { header } => {
                let _ = self.get_http_request_header(header);
                Action::Continue
            }
            Mode::Call {
                cluster,
                headers,
                body,
            } => {
                let headers: Vec<(&str, &str)> = headers
                    .iter()
                    .map(|(n, v)| (n.as_str(), v.as_str()))
                    .collect();
                let timeout = std::time::Duration::from_secs(10);
                match self.dispatch_http_call(cluster, headers, Some(body), vec![], timeout) {
                    Ok(_) => Action::Pause,
                    Err(_) => {
                        self.send_http_response(503, vec![], None);
                        Action::Pause
                    }
                }
            }
        }
    }
}

impl Http {
    fn step(&self, step: Step) {
        use proxy_wasm::hostcalls;
        match step {
            Step::Headers => {
                let _ = hostcalls::get_map_bytes(MapType::HttpRequestHeaders);
            }
            Step::Time => {
                let _ = hostcalls::get_current_time();
            }
            Step::Metric => {
                let _ = hostcalls::increment_metric(self.0.metric, 1);
            }
            Step::Random => {
                let mut nonce = [0u8; 16];
                let _ = getrandom::getrandom(&mut nonce);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_modes_and_refuses_the_rest() {
        assert_eq!(
            parse(b"pass Payment-Signature"),
            Ok(Mode::Pass {
                header: "payment-signature".into()
            })
        );
        assert_eq!(
            parse(b"reply 402\ncontent-type: application/json\nx-a: b: c\n\n{\"a\":\n1}"),
            Ok(Mode::Reply {
                status: 402,
                steps: vec![],
                headers: vec![
                    ("content-type".into(), "application/json".into()),
                    ("x-a".into(), "b: c".into())
                ],
                body: b"{\"a\":\n1}".to_vec(),
            })
        );
        assert!(matches!(
            parse(b"reply 402 headers time metric random\n\n"),
            Ok(Mode::Reply { steps, .. })
                if steps == [Step::Headers, Step::Time, Step::Metric, Step::Random]
        ));
        assert!(parse(b"reply 402 sleep\n\n").is_err());
        assert!(parse(b"pass a b").is_err());
        assert!(parse(b"reply 99").is_err());
        assert!(parse(b"reply 402\nno-colon\n\n").is_err());
        assert!(parse(b"echo").is_err());
        assert!(parse(b"pass").is_err());
        assert_eq!(
            parse(b"call sidecar 3\n:method: POST\n:path: /p\nx-a: b"),
            Ok(Mode::Call {
                cluster: "sidecar".into(),
                headers: vec![
                    (":method".into(), "POST".into()),
                    (":path".into(), "/p".into()),
                    ("x-a".into(), "b".into())
                ],
                body: b"xxx".to_vec(),
            })
        );
        assert!(parse(b"call sidecar many").is_err());
    }
}
