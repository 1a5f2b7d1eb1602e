//! Root context: parses the configuration, defines the metrics, keeps the challenge key, and
//! creates request contexts.

use super::http_context::Http;
use super::{Metrics, VmShared};
use crate::config;
use crate::host::{Level, RootHost};
use crate::keeper::{KeyCache, KeyKeeper};
use crate::metrics::Metric;
use crate::refill::PoolKeeper;
use crate::sidecar::Call;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{BufferType, ContextType};
use std::rc::Rc;
use std::time::Duration;

const TICK: Duration = Duration::from_secs(1);

pub struct Root {
    context_id: u32,
    shared: Option<Rc<VmShared>>,
    keeper: Option<KeyKeeper>,
    /// Refills the session pools of tagged routes.
    pools: Option<PoolKeeper>,
    /// Outcome batches sent and not yet answered.
    outcomes: Vec<crate::outcomes::Sent>,
    /// The VM is being shut down: it goes once its last outcome batch is answered.
    draining: bool,
}

impl Root {
    pub fn new(context_id: u32) -> Root {
        Root {
            context_id,
            shared: None,
            keeper: None,
            pools: None,
            outcomes: Vec::new(),
            draining: false,
        }
    }
}

/// [`RootHost`] over hostcalls.
struct Host<'a> {
    metrics: &'a Metrics,
}

impl RootHost for Host<'_> {
    fn now_unix(&self) -> u64 {
        super::now_unix()
    }

    fn shared_get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        hostcalls::get_shared_data(key).unwrap_or((None, None))
    }

    fn shared_set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
        // CAS 0 means "no CAS check" to the host; a missing key has no CAS.
        hostcalls::set_shared_data(key, Some(value), cas).is_ok()
    }

    fn dispatch(&mut self, call: &Call) -> Result<u32, String> {
        super::dispatch(call)
    }

    fn count(&mut self, metric: Metric) {
        self.metrics.count(metric);
    }

    fn log(&self, level: Level, message: &str) {
        self.metrics.log.log(level, message);
    }
}

/// This VM's id in its pass usage reports: 8 random bytes in hex (the clock's nanoseconds if
/// the host had no randomness, which still tells apart VMs started at different times).
fn vm_id() -> String {
    let mut id = [0u8; 8];
    if getrandom::getrandom(&mut id).is_err() {
        let nanos = hostcalls::get_current_time()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        id = (nanos as u64).to_be_bytes();
    }
    nanogate_protocol::hex::encode_lower(&id)
}

impl Root {
    /// Sends the VM's waiting outcomes and keeps the batches until they are answered.
    fn flush_outcomes(&mut self) {
        let Some(shared) = self.shared.as_ref() else {
            return;
        };
        let sent = crate::outcomes::flush(
            &shared.outcomes,
            &shared.cfg.sidecar,
            &mut Host {
                metrics: &shared.metrics,
            },
        );
        self.outcomes.extend(sent);
    }
}

impl Context for Root {
    /// The VM is being shut down (a configuration change, a drain): the outcomes still waiting
    /// go now, and the VM stays until their batches are answered (or time out).
    fn on_done(&mut self) -> bool {
        if self.shared.is_none() {
            return true;
        }
        self.draining = true;
        self.flush_outcomes();
        self.outcomes.is_empty()
    }

    fn on_http_call_response(
        &mut self,
        token_id: u32,
        _num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        let (Some(shared), Some(keeper)) = (self.shared.as_ref(), self.keeper.as_mut()) else {
            return;
        };
        if let Some(i) = self.outcomes.iter().position(|(t, _)| *t == token_id) {
            let (_, batch) = self.outcomes.swap_remove(i);
            if self.draining {
                if self.outcomes.is_empty() {
                    let _ = hostcalls::done();
                }
                return;
            }
            let ok = crate::sidecar::is_ok(super::call_status());
            let mut host = Host {
                metrics: &shared.metrics,
            };
            crate::outcomes::answered(&shared.outcomes, batch, ok, &mut host);
            return;
        }
        if let Some(pools) = self.pools.as_mut().filter(|p| p.owns(token_id)) {
            let status = super::call_status();
            let body = super::call_body(body_size);
            let mut host = Host {
                metrics: &shared.metrics,
            };
            pools.on_answer(&mut host, token_id, status, body.as_deref());
            return;
        }
        if shared.passes.borrow().pending == Some(token_id) {
            let status = super::call_status();
            let body = super::call_body(body_size);
            let mut host = Host {
                metrics: &shared.metrics,
            };
            crate::passbook::report_answer(&shared.passes, &mut host, status, body.as_deref());
            return;
        }
        if keeper.owns(token_id) {
            let status = super::call_status();
            let body = super::call_body(body_size);
            let mut host = Host {
                metrics: &shared.metrics,
            };
            keeper.on_answer(&mut host, token_id, status, body.as_deref());
        }
    }
}

impl RootContext for Root {
    fn on_vm_start(&mut self, _vm_configuration_size: usize) -> bool {
        super::log_version_once();
        true
    }

    fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        let bytes = hostcalls::get_buffer(
            BufferType::PluginConfiguration,
            0,
            plugin_configuration_size,
        )
        .ok()
        .flatten()
        .unwrap_or_default();
        let cfg = match config::parse(&bytes) {
            Ok(c) => Rc::new(c),
            Err(e) => {
                super::log(
                    Level::Error,
                    &format!("nanogate: invalid plugin configuration: {e}"),
                );
                return false;
            }
        };
        if cfg.sidecar.secret_env.is_none() {
            super::log(
                Level::Warn,
                "nanogate: sidecar.secret is written in the plugin configuration, where config \
                 dumps show it; for anything but local use set sidecar.secretEnv instead",
            );
        }
        let cache = KeyCache::default();
        let shared = Rc::new(VmShared {
            cfg: Rc::clone(&cfg),
            cache: Rc::clone(&cache),
            metrics: Metrics::define(),
            root_id: self.context_id,
            nonces: Default::default(),
            passes: Rc::new(std::cell::RefCell::new(crate::passbook::PassBook::new(
                vm_id(),
            ))),
            outcomes: Default::default(),
        });
        let mut keeper = KeyKeeper::new(cfg, cache);
        keeper.start(&mut Host {
            metrics: &shared.metrics,
        });
        self.keeper = Some(keeper);
        self.pools = Some(PoolKeeper::new(Rc::clone(&shared.cfg)));
        self.shared = Some(shared);
        let _ = hostcalls::set_tick_period(TICK);
        true
    }

    fn on_tick(&mut self) {
        if let (Some(shared), Some(keeper)) = (self.shared.as_ref(), self.keeper.as_mut()) {
            shared.metrics.log.refresh();
            shared.metrics.flush();
            keeper.tick(&mut Host {
                metrics: &shared.metrics,
            });
            if let Some(pools) = self.pools.as_mut() {
                pools.tick(&mut Host {
                    metrics: &shared.metrics,
                });
            }
            crate::passbook::report_tick(
                &shared.passes,
                &shared.cfg,
                &mut Host {
                    metrics: &shared.metrics,
                },
            );
        }
        self.flush_outcomes();
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        // Never `None`: the SDK panics on it. Unconfigured → a context that passes everything.
        Some(Box::new(Http::new(context_id, self.shared.clone())))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
