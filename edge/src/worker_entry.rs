//! The Workers entry: turns the runtime's request into an [`ApiRequest`], hands it to
//! [`api::handle`], and implements [`Platform`] over workers-rs. Nothing else lives here.

use std::time::Duration;

use shared::error::FieldError;
use shared::validation::MAX_BODY_BYTES;
use wasm_bindgen::JsValue;
use worker::{console_error, event, Context, Delay, Env, Fetch, Headers, Method, Request, RequestInit, Response, Result};

use crate::api;
use crate::config::Config;
use crate::http::{ApiRequest, ApiResponse};
use crate::platform::{FetchError, HttpRequest, HttpResponse, Platform};
use crate::services::Edge;

thread_local! {
    /// Built on the first request of the isolate and kept for its life, so keys and
    /// parsed settings are reused across requests.
    static EDGE: std::cell::OnceCell<&'static Result<Edge, Vec<FieldError>>> = const { std::cell::OnceCell::new() };
}

fn edge(env: &Env) -> &'static Result<Edge, Vec<FieldError>> {
    EDGE.with(|cell| {
        *cell.get_or_init(|| {
            let get = |name: &str| env.var(name).ok().map(|v| v.to_string());
            let built = Config::from_env(get).and_then(Edge::new);
            if let Err(bad) = &built {
                for f in bad {
                    console_error!("setting {}: {}", f.field, f.message);
                }
            }
            Box::leak(Box::new(built))
        })
    })
}

#[event(fetch)]
async fn fetch(mut req: Request, env: Env, _ctx: Context) -> Result<Response> {
    let url = req.url()?;
    let headers: Vec<(String, String)> = req.headers().entries().map(|(k, v)| (k.to_ascii_lowercase(), v)).collect();
    let declared = headers.iter().find(|(k, _)| k == "content-length").and_then(|(_, v)| v.parse::<usize>().ok());
    let method = req.method().to_string();
    // An oversized body is refused without reading it; the handler sees only its size.
    let body = if matches!(req.method(), Method::Post) && declared.is_none_or(|n| n <= MAX_BODY_BYTES) { req.bytes().await? } else { Vec::new() };
    let oversized = declared.is_some_and(|n| n > MAX_BODY_BYTES);
    let request = ApiRequest { method, path: url.path().to_owned(), query: url.query().unwrap_or_default().to_owned(), headers, body, oversized };
    let platform = WorkerPlatform { env: &env };
    let edge = edge(&env).as_ref().map_err(Vec::as_slice);
    into_response(api::handle(&platform, edge, request).await)
}

fn into_response(r: ApiResponse) -> Result<Response> {
    let headers = Headers::new();
    for (k, v) in &r.headers {
        headers.set(k, v)?;
    }
    let builder = worker::ResponseBuilder::new().with_status(r.status).with_headers(headers);
    Ok(if r.body.is_empty() { builder.empty() } else { builder.fixed(r.body.into_bytes()) })
}

/// `env[binding].limit({key})`; `Ok(true)` when no such binding is configured.
async fn rate_limit(env: &Env, binding: &str, key: &str) -> std::result::Result<bool, JsValue> {
    use js_sys::{Function, Object, Promise, Reflect};
    use wasm_bindgen::JsCast;
    let limiter = Reflect::get(env.as_ref(), &JsValue::from_str(binding))?;
    if limiter.is_undefined() {
        return Ok(true);
    }
    let limit: Function = Reflect::get(&limiter, &JsValue::from_str("limit"))?.dyn_into()?;
    let options = Object::new();
    Reflect::set(&options, &JsValue::from_str("key"), &JsValue::from_str(key))?;
    let outcome = wasm_bindgen_futures::JsFuture::from(limit.call1(&limiter, &options)?.dyn_into::<Promise>()?).await?;
    Ok(Reflect::get(&outcome, &JsValue::from_str("success"))?.as_bool().unwrap_or(true))
}

struct WorkerPlatform<'a> {
    env: &'a Env,
}

impl Platform for WorkerPlatform<'_> {
    async fn fetch(&self, request: HttpRequest) -> std::result::Result<HttpResponse, FetchError> {
        let err = |e: worker::Error| FetchError(e.to_string());
        let headers = Headers::new();
        for (k, v) in &request.headers {
            headers.set(k, v).map_err(err)?;
        }
        let mut init = RequestInit::new();
        init.with_method(Method::from(request.method.to_owned())).with_headers(headers);
        if !request.body.is_empty() {
            init.with_body(Some(JsValue::from(js_sys::Uint8Array::from(request.body.as_slice()))));
        }
        let req = Request::new_with_init(&request.url, &init).map_err(err)?;
        let mut response = Fetch::Request(req).send().await.map_err(err)?;
        let status = response.status_code();
        let body = response.bytes().await.map_err(err)?;
        Ok(HttpResponse { status, body })
    }

    fn now_ms(&self) -> u64 {
        js_sys::Date::now() as u64
    }

    fn fill_random(&self, buf: &mut [u8]) {
        getrandom::getrandom(buf).expect("crypto.getRandomValues is available in Workers");
    }

    async fn sleep_ms(&self, ms: u64) {
        Delay::from(Duration::from_millis(ms)).await;
    }

    async fn allow_api_call(&self, limiter: &'static str, account: &str) -> bool {
        // Called through JS rather than `Env::rate_limiter`, whose check of the binding's
        // constructor name fails under `wrangler dev`, where the binding is simulated.
        match rate_limit(self.env, limiter, account).await {
            Ok(allowed) => allowed,
            Err(e) => {
                console_error!("rate limiter {limiter} unavailable, call allowed: {e:?}");
                true
            }
        }
    }

    fn log_error(&self, message: &str) {
        console_error!("{message}");
    }
}
