//! An application: the manifest's components loaded, linked and routed.

use crate::component::{ComponentHandler, ComponentRuntime, HandlerKind};
use crate::engine::{EpochTicker, load_component, new_engine, new_linker};
use crate::error::{RequestError, StartError};
use crate::key_value::KeyValueAccess;
use crate::manifest::Manifest;
use crate::outbound::{AllowedHost, OutboundPolicy};
use crate::routes::Router;
use crate::runtime_config::{Limits, RuntimeConfig};
use crate::state::HostState;
use crate::variables::{AppVariables, EnvSource, VariableSource};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tiktok_edge_kv::KeyValueBackend;
use tiktok_edge_kv_sqlite::SqliteBackend;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::Instrument;
use wasmtime::Store;
use wasmtime::component::{Instance, InstancePre};
use wasmtime_wasi_http::WasiBody;
use wasmtime_wasi_http::handler::{ExpirationError, ProxyHandler, ProxyPre};

/// Largest total size of a request's header names and values; more is refused (431)
/// before any guest runs.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

/// How to load an app.
pub struct AppOptions {
    pub manifest: PathBuf,
    /// Holds the SQLite key-value file and the compiled-component cache.
    pub data_dir: PathBuf,
    pub runtime_config: RuntimeConfig,
    /// Variable values that win over the environment and defaults (sandbox mode, tests).
    pub variables: HashMap<String, String>,
    /// Key-value backend; SQLite in `data_dir` when `None`.
    pub key_value: Option<Arc<dyn KeyValueBackend>>,
    /// Where compiled components are cached; `data_dir/compiled` when `None`. Apps that
    /// share the engine settings may share it (tests do, so each component compiles once).
    pub compiled_cache: Option<PathBuf>,
}

impl AppOptions {
    pub fn new(manifest: impl Into<PathBuf>, data_dir: impl Into<PathBuf>) -> Self {
        AppOptions {
            manifest: manifest.into(),
            data_dir: data_dir.into(),
            runtime_config: RuntimeConfig::default(),
            variables: HashMap::new(),
            key_value: None,
            compiled_cache: None,
        }
    }
}

struct LoadedComponent {
    id: String,
    kind: HandlerKind,
    /// Its own body limit, when set: its bodies are streamed, not read first.
    streamed_body_limit: Option<usize>,
    request_timeout: Duration,
    handler: ProxyHandler<ComponentHandler>,
    instance_pre: InstancePre<HostState>,
}

/// A loaded application, ready to serve requests.
pub struct App {
    manifest: Manifest,
    router: Router<usize>,
    components: Vec<LoadedComponent>,
    limits: Limits,
    permits: Arc<Semaphore>,
    next_request: AtomicU64,
    request_prefix: u32,
    variables: AppVariables,
    _ticker: EpochTicker,
}

impl App {
    /// Loads, validates, compiles and links everything; any problem stops here with a
    /// message naming what is wrong.
    pub fn load(options: AppOptions) -> Result<Self, StartError> {
        let manifest = Manifest::load(&options.manifest)?;
        let file = manifest.file.display().to_string();
        let sources: [&dyn VariableSource; 2] = [&options.variables, &EnvSource];
        let variables = AppVariables::resolve(&manifest, &sources)?;

        std::fs::create_dir_all(&options.data_dir).map_err(|source| StartError::DataDir {
            dir: options.data_dir.display().to_string(),
            source,
        })?;
        let backend: Arc<dyn KeyValueBackend> = match options.key_value {
            Some(b) => b,
            None => Arc::new(SqliteBackend::open_with_options(
                &options.data_dir.join("key-value.sqlite"),
                &options.runtime_config.key_value,
            )?),
        };

        let limits = options.runtime_config.limits.clone();
        // Headroom over the request permits: an instance that timed out may still be
        // tearing down while its permit is already reused.
        let max_instances =
            u32::try_from(limits.max_concurrent_requests + limits.max_concurrent_requests / 2 + 8)
                .unwrap_or(u32::MAX);
        let engine =
            new_engine(max_instances, limits.max_memory_bytes).map_err(StartError::Engine)?;
        let linker = new_linker(&engine).map_err(StartError::Engine)?;
        let cache_dir = options
            .compiled_cache
            .clone()
            .unwrap_or_else(|| options.data_dir.join("compiled"));

        let mut components = Vec::new();
        let mut index_of = HashMap::new();
        for decl in manifest.components.values() {
            let component_error = |error: wasmtime::Error| StartError::Component {
                id: decl.id.clone(),
                source_path: decl.source.display().to_string(),
                error,
            };
            let mut allowed = Vec::new();
            for (index, raw) in decl.allowed_outbound_hosts.iter().enumerate() {
                let outbound_error = |message: String| StartError::OutboundHost {
                    file: file.clone(),
                    id: decl.id.clone(),
                    index,
                    message,
                };
                let rendered = variables.render(raw).ok_or_else(|| {
                    outbound_error(format!("{raw:?} refers to a variable without a value"))
                })?;
                let parsed = AllowedHost::parse(&rendered).map_err(|reason| {
                    if rendered == *raw {
                        outbound_error(reason)
                    } else {
                        // The rendered value may hold a secret: name the template only.
                        outbound_error(format!(
                            "{raw:?}: its variables do not render to `scheme://host[:port]`"
                        ))
                    }
                })?;
                allowed.push(parsed);
            }
            let component =
                load_component(&engine, &decl.source, Some(&cache_dir)).map_err(component_error)?;
            let instance_pre = linker
                .instantiate_pre(&component)
                .map_err(component_error)?;
            let typed_pre = instance_pre.clone();
            let (pre, kind) = match wasmtime_wasi_http::p3::bindings::ServicePre::new(
                instance_pre.clone(),
            ) {
                Ok(p3) => (ProxyPre::P3(p3), HandlerKind::P3),
                Err(_) => {
                    let p2 = wasmtime_wasi_http::p2::bindings::ProxyPre::new(instance_pre).map_err(|e| {
                        component_error(e.context("it exports neither wasi:http/incoming-handler@0.2 nor wasi:http/handler@0.3"))
                    })?;
                    (ProxyPre::P2(p2), HandlerKind::P2)
                }
            };
            let settings = options.runtime_config.component(&decl.id);
            let runtime = ComponentRuntime {
                id: Arc::from(decl.id.as_str()),
                pre,
                kind,
                kv: KeyValueAccess::new(backend.clone(), decl.key_value_stores.iter().cloned()),
                vars: Arc::new(variables.for_component(&decl.variables)),
                outbound: Arc::new(OutboundPolicy::new(allowed)),
                environment: decl
                    .environment
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                settings: settings.clone(),
                request_timeout: settings.request_timeout(&limits),
                max_memory_bytes: limits.max_memory_bytes,
                idle_timeout: Duration::from_secs(1),
            };
            let handler = ProxyHandler::new(ComponentHandler {
                engine: engine.clone(),
                runtime: Arc::new(runtime),
            });
            index_of.insert(decl.id.clone(), components.len());
            components.push(LoadedComponent {
                id: decl.id.clone(),
                kind,
                streamed_body_limit: settings.max_request_body_bytes,
                request_timeout: settings.request_timeout(&limits),
                handler,
                instance_pre: typed_pre,
            });
        }

        let mut router = Router::default();
        for trigger in &manifest.http_triggers {
            let index = index_of[&trigger.component];
            if let Some(replaced) = router.add(trigger.route.clone(), index) {
                tracing::warn!(
                    route = trigger.route.raw(),
                    replaced = %components[replaced].id,
                    by = %trigger.component,
                    "duplicate route: the later trigger wins, as in Spin"
                );
            }
        }

        Ok(App {
            permits: Arc::new(Semaphore::new(limits.max_concurrent_requests)),
            manifest,
            router,
            components,
            limits,
            next_request: AtomicU64::new(1),
            request_prefix: fastrand::u32(..),
            variables,
            _ticker: EpochTicker::start(&engine),
        })
    }

    /// Renders a `{{ variable }}` template with the app's variables (secrets included:
    /// for values the host sends on the app's behalf, never for logs).
    pub fn render(&self, template: &str) -> Option<String> {
        self.variables.render(template)
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// `(route, component id, handler kind)` for every served route, most general last.
    pub fn routes(&self) -> Vec<(String, String, HandlerKind)> {
        let mut routes: Vec<_> = self
            .router
            .routes()
            .map(|(r, &i)| {
                (
                    r.raw().to_string(),
                    self.components[i].id.clone(),
                    self.components[i].kind,
                )
            })
            .collect();
        routes.sort();
        routes
    }

    /// Instantiates component `id` outside HTTP, with the same grants and limits, so an
    /// embedder (or a scheduler) can call its typed `tiktok:edge/*` exports.
    pub async fn instantiate(&self, id: &str) -> wasmtime::Result<(Store<HostState>, Instance)> {
        let component = self
            .components
            .iter()
            .find(|c| c.id == id)
            .ok_or_else(|| wasmtime::format_err!("no component `{id}` in this app"))?;
        let handler = component.handler.state();
        let mut store = handler.runtime.new_store(&handler.engine);
        let instance = component.instance_pre.instantiate_async(&mut store).await?;
        Ok((store, instance))
    }

    fn new_request_id(&self) -> String {
        format!(
            "{:08x}-{:08x}",
            self.request_prefix,
            self.next_request.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// Handles one request end to end; never fails: host-side problems become JSON errors.
    pub async fn handle<B>(
        &self,
        request: http::Request<B>,
        client: SocketAddr,
    ) -> http::Response<WasiBody>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let request_id = self.new_request_id();
        let span = tracing::info_span!("request", id = %request_id, method = %request.method(), path = %request.uri().path());
        let started = std::time::Instant::now();
        let mut response = match self
            .dispatch(request, client, &request_id)
            .instrument(span.clone())
            .await
        {
            Ok(r) => r,
            Err(e) => e.into_response(&request_id),
        };
        if let Ok(v) = http::HeaderValue::from_str(&request_id) {
            response.headers_mut().insert("x-request-id", v);
        }
        span.in_scope(|| {
            tracing::info!(
                status = response.status().as_u16(),
                elapsed_us = started.elapsed().as_micros() as u64,
                "served"
            )
        });
        response
    }

    async fn dispatch<B>(
        &self,
        request: http::Request<B>,
        client: SocketAddr,
        request_id: &str,
    ) -> Result<http::Response<WasiBody>, RequestError>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let path = request.uri().path().to_string();
        let matched = self
            .router
            .route(&path)
            .ok_or(RequestError::NoRoute { path: path.clone() })?;
        let component = &self.components[*matched.target];

        let (mut parts, body) = request.into_parts();
        let header_bytes: usize = parts
            .headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len())
            .sum();
        if header_bytes > MAX_HEADER_BYTES {
            return Err(RequestError::HeadersTooLarge {
                limit: MAX_HEADER_BYTES,
            });
        }
        let limit = component
            .streamed_body_limit
            .unwrap_or(self.limits.max_request_body_bytes);
        let declared = parts
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(RequestError::BodyTooLarge { limit });
        }
        // Waiting for a permit before reading the body bounds the memory that bodies of
        // queued requests can take; the permit lives until the response body is sent.
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| RequestError::Unavailable("the server is shutting down".into()))?;
        let body: WasiBody = if component.streamed_body_limit.is_some() {
            // Streamed as it arrives; the component's request timeout bounds a trickle.
            Limited::new(body, limit)
                .map_err(move |e| {
                    if e.downcast_ref::<http_body_util::LengthLimitError>()
                        .is_some()
                    {
                        wasmtime_wasi_http::Error::HttpRequestBodySize(Some(limit as u64))
                    } else {
                        wasmtime_wasi_http::Error::InternalError(Some(e.to_string()))
                    }
                })
                .boxed_unsync()
        } else {
            // A client that trickles its body must not hold the permit forever.
            let body = tokio::time::timeout(
                self.limits.request_timeout(),
                BodyExt::collect(Limited::new(body, limit)),
            )
            .await
            .map_err(|_| RequestError::BodyTimeout)?
            .map_err(|e| {
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some()
                {
                    RequestError::BodyTooLarge { limit }
                } else {
                    RequestError::BadBody(e.to_string())
                }
            })?;
            Full::new(body.to_bytes())
                .map_err(|never| match never {})
                .boxed_unsync()
        };

        // The guest sees an absolute URL built from Host (HTTP/1.0 clients may omit it).
        let host = match parts.headers.get(http::header::HOST) {
            None => "localhost".to_string(),
            Some(value) => value
                .to_str()
                .ok()
                .filter(|h| {
                    h.parse::<http::uri::Authority>()
                        .is_ok_and(|a| a.as_str() == *h)
                })
                .ok_or_else(|| RequestError::BadRequest(format!("invalid Host header {value:?}")))?
                .to_string(),
        };
        let path_and_query = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
            .to_string();
        let full_url = format!("http://{host}{path_and_query}");
        parts.uri = full_url.parse().map_err(|_| {
            RequestError::BadRequest(format!("invalid request target {full_url:?}"))
        })?;

        // The spin-* headers are ours: a client must not be able to set them.
        let spoofed: Vec<_> = parts
            .headers
            .keys()
            .filter(|n| n.as_str().starts_with("spin-"))
            .cloned()
            .collect();
        for name in spoofed {
            parts.headers.remove(name);
        }
        parts.headers.remove(http::header::CONNECTION);
        let route = matched.route;
        let mut set = |name: &str, value: &str| {
            if let (Ok(n), Ok(v)) = (
                http::HeaderName::from_bytes(name.as_bytes()),
                http::HeaderValue::from_str(value),
            ) {
                parts.headers.insert(n, v);
            }
        };
        set("spin-full-url", &full_url);
        set("spin-path-info", &matched.path_info);
        set("spin-matched-route", &route.normalized());
        set("spin-base-path", "/");
        set("spin-raw-component-route", route.raw());
        set("spin-component-route", route.prefix());
        set("spin-client-addr", &client.to_string());
        for (name, value) in &matched.params {
            set(
                // Spin: SPIN_PATH_MATCH_<NAME>, `_` turned into `-`, lowercased.
                &format!(
                    "spin-path-match-{}",
                    name.replace('_', "-").to_ascii_lowercase()
                ),
                value,
            );
        }

        let request = http::Request::from_parts(parts, body);
        let started = std::time::Instant::now();
        let response = component.handler.handle(Arc::from(request_id), request).await.map_err(|e| {
            // When a busy instance is ended by the expiration backstop the error is a
            // generic one; the elapsed time tells it was the timeout all the same.
            if e.downcast_ref::<ExpirationError>().is_some() || started.elapsed() >= component.request_timeout {
                tracing::warn!(component = %component.id, "request timed out");
                RequestError::Timeout
            } else {
                tracing::error!(component = %component.id, error = %format!("{e:?}"), "component failed");
                RequestError::GuestFailed
            }
        })?;
        Ok(response.map(|body| {
            PermitBody {
                inner: body,
                _permit: permit,
            }
            .boxed_unsync()
        }))
    }
}

/// A response body that holds its request's concurrency permit until it is sent: the
/// instance that produces it is busy until then.
struct PermitBody {
    inner: WasiBody,
    _permit: OwnedSemaphorePermit,
}

impl http_body::Body for PermitBody {
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
