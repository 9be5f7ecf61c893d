//! One loaded component: its `InstancePre`, its grants, and how instances are made and reused.
//!
//! By default every request gets a fresh instance (as Spin does), from the pooling
//! allocator with copy-on-write memory, so no state leaks between requests. The runtime
//! config can let an instance serve up to N requests in a row (and, for `wasi:http` 0.3
//! components, up to M at once), which trades isolation for throughput.

use crate::engine::EPOCH_TICK;
use crate::key_value::KeyValueAccess;
use crate::outbound::OutboundPolicy;
use crate::runtime_config::ComponentSettings;
use crate::state::{HostState, OutboundGate};
use crate::variables::ComponentVariables;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use wasmtime::Result;
use wasmtime::component::{GuestTaskId, ResourceTable};
use wasmtime::{Store, StoreContextMut, StoreLimitsBuilder};
use wasmtime_wasi::WasiCtx;
use wasmtime_wasi_http::WasiHttpCtx;
use wasmtime_wasi_http::handler::{
    HandlerState, Instance, ProxyPre, ShouldAccept, WorkerExpiration, WorkerState, WorkerStatus,
};

/// Which `wasi:http` handler the component exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum HandlerKind {
    /// `wasi:http/incoming-handler@0.2.x`.
    P2,
    /// `wasi:http/handler@0.3.0` (spin-sdk 7, Spin 4).
    P3,
}

/// Everything needed to make an instance of one component.
pub struct ComponentRuntime {
    pub id: Arc<str>,
    pub pre: ProxyPre<HostState>,
    pub kind: HandlerKind,
    pub kv: KeyValueAccess,
    pub vars: Arc<ComponentVariables>,
    pub outbound: Arc<OutboundPolicy>,
    pub environment: Vec<(String, String)>,
    pub settings: ComponentSettings,
    pub request_timeout: Duration,
    pub max_memory_bytes: usize,
    /// How long an idle reused instance is kept.
    pub idle_timeout: Duration,
}

impl ComponentRuntime {
    /// A fresh store for one instance, with its limits and epoch deadline set.
    pub fn new_store(&self, engine: &wasmtime::Engine) -> Store<HostState> {
        let mut wasi = WasiCtx::builder();
        wasi.inherit_stdout().inherit_stderr();
        for (k, v) in &self.environment {
            wasi.env(k, v);
        }
        let state = HostState {
            table: ResourceTable::new(),
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            hooks: OutboundGate {
                component: self.id.clone(),
                policy: self.outbound.clone(),
            },
            limits: StoreLimitsBuilder::new()
                .memory_size(self.max_memory_bytes)
                .trap_on_grow_failure(false)
                .build(),
            kv: self.kv.clone(),
            vars: self.vars.clone(),
        };
        let mut store = Store::new(engine, state);
        store.limiter(|s| &mut s.limits);
        // A guest that computes without pause yields back to the host every epoch tick,
        // so request timeouts fire even for a busy loop.
        store.epoch_deadline_async_yield_and_update(1);
        store.set_epoch_deadline(1);
        store
    }

    fn concurrency(&self) -> usize {
        match self.kind {
            // A wasi:http 0.2 instance handles one request at a time.
            HandlerKind::P2 => 1,
            HandlerKind::P3 => self.settings.max_concurrent_reuse,
        }
    }
}

/// The engine-bound state the `ProxyHandler` instantiates from.
pub struct ComponentHandler {
    pub engine: wasmtime::Engine,
    pub runtime: Arc<ComponentRuntime>,
}

impl HandlerState for ComponentHandler {
    type StoreData = HostState;
    type WorkerExpiration = Expiration;
    type WorkerState = Worker;

    async fn instantiate(&self) -> Result<Instance<HostState, Expiration, Worker>> {
        let rt = &self.runtime;
        let mut store = rt.new_store(&self.engine);
        let proxy = rt.pre.instantiate_async(&mut store).await?;
        Ok(Instance {
            store,
            proxy,
            view: wasmtime_wasi_http::WasiHttpView::http,
            expiration: Expiration {
                idle_timeout: rt.idle_timeout,
                // The backstop for requests whose own timer cannot fire (see `Expiration`).
                request_timeout: rt.request_timeout + EPOCH_TICK * 10,
                sleep: Box::pin(tokio::time::sleep(Duration::MAX / 4)),
            },
            state: Worker {
                max_total: rt.settings.max_instance_reuse,
                max_concurrent: rt.concurrency(),
                request_timeout: rt.request_timeout,
                component: rt.id.clone(),
            },
        })
    }
}

/// Decides how many requests an instance takes.
pub struct Worker {
    max_total: usize,
    max_concurrent: usize,
    request_timeout: Duration,
    component: Arc<str>,
}

impl WorkerState for Worker {
    type StoreData = HostState;
    /// The request id, for logs.
    type RequestData = Arc<str>;

    fn should_accept_request(&self, concurrent: usize, total: usize) -> ShouldAccept {
        if total >= self.max_total {
            ShouldAccept::Never
        } else if concurrent >= self.max_concurrent {
            ShouldAccept::No
        } else {
            ShouldAccept::Yes
        }
    }

    fn on_request_start(
        &self,
        _store: StoreContextMut<'_, HostState>,
        request_id: Arc<str>,
        _task: GuestTaskId,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + Sync>> {
        tracing::trace!(component = %self.component, %request_id, "instance accepted request");
        Box::pin(tokio::time::sleep(self.request_timeout))
    }

    fn drop(&self, store: Store<HostState>, result: Result<()>) {
        match result {
            Ok(()) => {}
            Err(e) if stopped_unfinished(&e, std::thread::panicking()) => {
                tracing::debug!(component = %self.component, "instance stopped with the runtime");
            }
            Err(e) => {
                tracing::warn!(component = %self.component, error = %format!("{e:#}"), "instance ended with an error");
            }
        }
        drop(store);
    }
}

/// Whether an instance's worker was dropped before it finished with no panic under way:
/// the runtime stopping (a shutdown) while the instance idled between reused requests.
/// wasmtime-wasi-http's handler reports any such drop as "worker panicked", which then
/// read as a crash in the logs of every stop.
fn stopped_unfinished(error: &wasmtime::Error, panicking: bool) -> bool {
    !panicking && error.to_string() == "worker panicked"
}

/// Ends an instance that idles too long or whose requests outlive the timeout (the second
/// line of defence `wasmtime_wasi_http::handler` asks for).
pub struct Expiration {
    idle_timeout: Duration,
    request_timeout: Duration,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl WorkerExpiration for Expiration {
    fn poll(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        status: WorkerStatus,
        start: Instant,
    ) -> Poll<()> {
        let me = self.get_mut();
        let timeout = match status {
            WorkerStatus::Idle => me.idle_timeout,
            WorkerStatus::Requests | WorkerStatus::PostReturn => me.request_timeout,
        };
        let Some(deadline) = start.checked_add(timeout) else {
            return Poll::Pending;
        };
        let deadline = tokio::time::Instant::from_std(deadline);
        if me.sleep.deadline() != deadline {
            me.sleep.as_mut().reset(deadline);
        }
        me.sleep.as_mut().poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_dropped_at_shutdown_is_not_reported_as_a_crash() {
        let dropped = wasmtime::format_err!("worker panicked");
        assert!(stopped_unfinished(&dropped, false));
        assert!(
            !stopped_unfinished(&dropped, true),
            "a real panic unwinding is still one"
        );
        assert!(!stopped_unfinished(
            &wasmtime::format_err!("guest trapped: unreachable"),
            false
        ));
    }
}
