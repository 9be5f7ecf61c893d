//! What each component instance's `Store` holds, and the outbound HTTP gate.

use crate::key_value::KeyValueAccess;
use crate::key_value::KvView;
use crate::outbound::OutboundPolicy;
use crate::variables::ComponentVariables;
use crate::variables::VarsView;
use std::sync::Arc;
use wasmtime::StoreLimits;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{
    RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView,
};

/// Store data of one component instance.
pub struct HostState {
    pub table: ResourceTable,
    pub wasi: WasiCtx,
    pub http: WasiHttpCtx,
    pub hooks: OutboundGate,
    pub limits: StoreLimits,
    pub kv: KeyValueAccess,
    pub vars: Arc<ComponentVariables>,
}

impl HostState {
    pub fn kv_view(&mut self) -> KvView<'_> {
        KvView {
            access: &self.kv,
            table: &mut self.table,
        }
    }

    pub fn vars_view(&mut self) -> VarsView<'_> {
        VarsView { vars: &self.vars }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// Refuses outbound requests to hosts outside the component's `allowed_outbound_hosts`
/// before any connection is made; the guest sees `HTTP-request-denied`.
pub struct OutboundGate {
    pub component: Arc<str>,
    pub policy: Arc<OutboundPolicy>,
}

type SendResult = wasmtime_wasi_http::Result<(
    http::Response<WasiBody>,
    Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
)>;

impl WasiHttpHooks for OutboundGate {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> Box<dyn Future<Output = SendResult> + Send> {
        let uri = request.uri();
        let scheme = uri.scheme_str().unwrap_or("https").to_string();
        let host = uri.host().unwrap_or_default().to_string();
        if !self.policy.allows(&scheme, &host, uri.port_u16()) {
            tracing::warn!(component = %self.component, %scheme, %host, port = ?uri.port_u16(), "outbound request denied: not in allowed_outbound_hosts");
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        Box::new(async move {
            use http_body_util::BodyExt;
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                response.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn Future<Output = _> + Send>,
            ))
        })
    }
}
