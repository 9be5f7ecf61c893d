//! A test app written with spin-sdk 7 (wasi:http 0.3 handler, spin:key-value@3.0.0 and
//! spin:variables@3.0.0). Routes:
//! - `GET /spin/kv/<key>?store=S`: the value's bytes (200), or `not found` (404)
//! - `PUT /spin/kv/<key>?store=S`: sets the key to the request body (204)
//!   (`store` defaults to "default"; a store that cannot be opened answers 403 `error: <e>`)
//! - `GET /spin/keys`: the default store's keys, newline-joined
//! - `GET /spin/outbound?url=U`: an outgoing GET; `status: N` or `error: <code>`
//! - `GET /spin/var/<name>`: the variable's value (200), or `error: <e>` (404)
//! - anything else: 404

use bytes::Bytes;
use spin_sdk::http::body::IncomingBodyExt;
use spin_sdk::http::{FullBody, Method, Request, StatusCode};
use spin_sdk::http_service;
use spin_sdk::key_value::Store;
use spin_sdk::variables;

type Reply = (StatusCode, FullBody<Bytes>);

fn reply(status: StatusCode, body: impl Into<Bytes>) -> Reply {
    (status, FullBody::new(body.into()))
}

#[http_service]
async fn handle(req: Request) -> anyhow::Result<Reply> {
    let path = req.uri().path().to_owned();
    let store = req
        .uri()
        .query()
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|pair| pair.strip_prefix("store="))
        .map(str::to_owned);
    let method = req.method().clone();

    if let Some(key) = path.strip_prefix("/spin/kv/") {
        let opened = match &store {
            Some(label) => Store::open(label).await,
            None => Store::open_default().await,
        };
        let store = match opened {
            Ok(store) => store,
            Err(e) => return Ok(reply(StatusCode::FORBIDDEN, format!("error: {e:?}"))),
        };
        return Ok(match method {
            Method::GET => match store.get(key).await? {
                Some(value) => reply(StatusCode::OK, value),
                None => reply(StatusCode::NOT_FOUND, "not found"),
            },
            Method::PUT => {
                let value = req.into_body().bytes().await?;
                store.set(key, &value).await?;
                reply(StatusCode::NO_CONTENT, Bytes::new())
            }
            _ => reply(StatusCode::METHOD_NOT_ALLOWED, Bytes::new()),
        });
    }

    if method == Method::GET && path == "/spin/outbound" {
        let url = req.uri().query().and_then(|q| q.strip_prefix("url=")).unwrap_or_default().to_owned();
        return Ok(match spin_sdk::http::get(&url).await {
            Ok(response) => reply(StatusCode::OK, format!("status: {}", response.status().as_u16())),
            Err(e) => reply(StatusCode::OK, format!("error: {e:?}")),
        });
    }

    if method == Method::GET && path == "/spin/keys" {
        let keys = Store::open_default().await?.get_keys().await.collect().await?;
        return Ok(reply(StatusCode::OK, keys.join("\n")));
    }

    if method == Method::GET {
        if let Some(name) = path.strip_prefix("/spin/var/") {
            return Ok(match variables::get(name).await {
                Ok(value) => reply(StatusCode::OK, value),
                Err(e) => reply(StatusCode::NOT_FOUND, format!("error: {e:?}")),
            });
        }
    }

    Ok(reply(StatusCode::NOT_FOUND, "not found"))
}
