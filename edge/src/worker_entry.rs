//! The Workers entry: turns the runtime's request into an [`ApiRequest`], hands it to
//! [`api::handle`], and implements [`Platform`] over workers-rs. Nothing else lives here.

use std::time::Duration;

use shared::error::FieldError;
use wasm_bindgen::JsCast;
use wasm_bindgen::JsValue;
use wasm_bindgen_futures::JsFuture;
use worker::{console_error, event, web_sys, Context, Delay, Env, Result};

use crate::api;
use crate::config::Config;
use crate::http::{ApiRequest, ApiResponse, READ_HEADERS};
use crate::platform::{FetchError, HttpRequest, HttpResponse, Platform};
use crate::services::Edge;

thread_local! {
    /// [`READ_HEADERS`] as `js/glue.js` takes them, joined once.
    static READ_HEADER_NAMES: String = READ_HEADERS.join("\n");
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

/// Over the raw `web_sys` types: `worker::Request` reads `request.cf` and parses the URL
/// on every request, which the CPU profile showed as a tenth of the edge's time.
#[event(fetch)]
async fn fetch(req: web_sys::Request, env: Env, _ctx: Context) -> Result<web_sys::Response> {
    let url = req.url();
    let (path, query) = ApiRequest::split_url(&url);
    let lines = READ_HEADER_NAMES.with(|names| request_headers(&req, names));
    let mut parts = lines.split_terminator('\n');
    let mut headers = Vec::with_capacity(READ_HEADERS.len());
    while let (Some(k), Some(v)) = (parts.next(), parts.next()) {
        headers.push((k.to_owned(), v.to_owned()));
    }
    // The body stays in its stream: a handler reads it (`Platform::read_body`) only
    // after the token is checked, and only up to the limit.
    let request = ApiRequest { method: req.method(), path: path.to_owned(), query: query.to_owned(), headers };
    let platform = WorkerPlatform { env: &env, request: &req };
    let edge = edge(&env).as_ref().map_err(Vec::as_slice);
    Ok(into_response(api::handle(&platform, edge, request).await)?)
}

fn into_response(r: ApiResponse) -> std::result::Result<web_sys::Response, JsValue> {
    respond(r.status, &header_lines(r.headers.iter().map(|(k, v)| (*k, v.as_str()))), &r.body)
}

/// `env[binding].limit({key})`; `Ok(true)` when no such binding is configured.
async fn rate_limit(env: &Env, binding: &str, key: &str) -> std::result::Result<bool, JsValue> {
    use js_sys::{Function, Object, Promise, Reflect};
    let limiter = Reflect::get(env.as_ref(), &JsValue::from_str(binding))?;
    if limiter.is_undefined() {
        return Ok(true);
    }
    let limit: Function = Reflect::get(&limiter, &JsValue::from_str("limit"))?.dyn_into()?;
    let options = Object::new();
    Reflect::set(&options, &JsValue::from_str("key"), &JsValue::from_str(key))?;
    let outcome = JsFuture::from(limit.call1(&limiter, &options)?.dyn_into::<Promise>()?).await?;
    Ok(Reflect::get(&outcome, &JsValue::from_str("success"))?.as_bool().unwrap_or(true))
}

#[wasm_bindgen::prelude::wasm_bindgen(module = "/js/glue.js")]
extern "C" {
    #[wasm_bindgen(js_name = requestHeaders)]
    fn request_headers(request: &web_sys::Request, names: &str) -> String;
    #[wasm_bindgen(catch, js_name = fetchBytes)]
    fn fetch_bytes(url: &str, method: &str, header_lines: &str, body: &[u8]) -> std::result::Result<js_sys::Promise, JsValue>;
    #[wasm_bindgen(catch, js_name = readBody)]
    fn read_body(request: &web_sys::Request, limit: u32) -> std::result::Result<js_sys::Promise, JsValue>;
    #[wasm_bindgen(catch)]
    fn respond(status: u16, header_lines: &str, body: &str) -> std::result::Result<web_sys::Response, JsValue>;
}

/// Header pairs as the lines `js/glue.js` takes.
fn header_lines<'a>(headers: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    let mut lines = String::with_capacity(512);
    for (k, v) in headers {
        lines.push_str(k);
        lines.push('\n');
        lines.push_str(v);
        lines.push('\n');
    }
    lines
}

/// One outbound request, through `js/glue.js`.
async fn outbound_fetch(request: HttpRequest) -> std::result::Result<HttpResponse, JsValue> {
    let lines = header_lines(request.headers.iter().map(|(k, v)| (*k, v.as_str())));
    let answer: js_sys::Array = JsFuture::from(fetch_bytes(&request.url, request.method, &lines, &request.body)?).await?.unchecked_into();
    let status = answer.get(0).as_f64().unwrap_or_default() as u16;
    let body = answer.get(1).unchecked_into::<js_sys::Uint8Array>().to_vec();
    Ok(HttpResponse { status, body })
}

struct WorkerPlatform<'a> {
    env: &'a Env,
    request: &'a web_sys::Request,
}

impl Platform for WorkerPlatform<'_> {
    async fn fetch(&self, request: HttpRequest) -> std::result::Result<HttpResponse, FetchError> {
        outbound_fetch(request).await.map_err(|e| FetchError(format!("{e:?}")))
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

    async fn read_body(&self, limit: usize) -> std::result::Result<Option<Vec<u8>>, FetchError> {
        let read = async { JsFuture::from(read_body(self.request, limit as u32)?).await };
        match read.await {
            Ok(v) if v.is_null() => Ok(None),
            Ok(v) => Ok(Some(v.unchecked_into::<js_sys::Uint8Array>().to_vec())),
            Err(e) => Err(FetchError(format!("{e:?}"))),
        }
    }

    fn log_error(&self, message: &str) {
        console_error!("{message}");
    }
}
