//! HTTP executor: POSTs the job as JSON to an endpoint; a 2xx body is the result.
//!
//! Retryability: timeouts, connection failures, 5xx, 408 and 429 are retryable; other 4xx and
//! any 3xx are not. Redirects are never followed, so a job cannot be bounced to another host.
//! Errors name only the status code, never the URL (it may hold a token) or the body.

use reqwest::{redirect, Client, StatusCode, Url};

use super::output::CappedOutput;
use super::{BoxFuture, ExecError, ExecOutput, Executor, Limits};
use crate::job::Job;

#[derive(Debug, thiserror::Error)]
pub enum HttpConfigError {
    #[error("invalid executor URL")]
    InvalidUrl,
    #[error("executor URL scheme must be http or https, not `{0}`")]
    UnsupportedScheme(String),
    #[error("could not build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

pub struct HttpExecutor {
    url: Url,
    client: Client,
    max_output_bytes: usize,
}

impl HttpExecutor {
    /// Takes the timeout and output cap from `limits` to enforce them on the request itself;
    /// register it with the same limits so concurrency is bounded too.
    pub fn new(url: &str, limits: &Limits) -> Result<Self, HttpConfigError> {
        let url = Url::parse(url).map_err(|_| HttpConfigError::InvalidUrl)?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(HttpConfigError::UnsupportedScheme(url.scheme().to_owned()));
        }
        let client = Client::builder()
            .redirect(redirect::Policy::none())
            .timeout(limits.timeout())
            .build()?;
        Ok(Self {
            url,
            client,
            max_output_bytes: limits.max_output_bytes(),
        })
    }

    async fn read_body(&self, mut response: reqwest::Response) -> Result<ExecOutput, ExecError> {
        let too_large = ExecError::OutputTooLarge {
            limit: self.max_output_bytes,
        };
        if response
            .content_length()
            .is_some_and(|len| len > self.max_output_bytes as u64)
        {
            return Err(too_large);
        }
        let mut output = CappedOutput::new(self.max_output_bytes);
        while let Some(chunk) = response.chunk().await.map_err(body_error)? {
            output.extend(&chunk)?;
        }
        output.into_output()
    }
}

impl Executor for HttpExecutor {
    fn run<'a>(&'a self, job: &'a Job) -> BoxFuture<'a, Result<ExecOutput, ExecError>> {
        Box::pin(async move {
            let response = self
                .client
                .post(self.url.clone())
                .json(job)
                .send()
                .await
                .map_err(send_error)?;
            let status = response.status();
            if status.is_success() {
                self.read_body(response).await
            } else {
                Err(status_error(status))
            }
        })
    }
}

fn send_error(e: reqwest::Error) -> ExecError {
    if e.is_timeout() {
        ExecError::Timeout
    } else if e.is_connect() {
        ExecError::transient("could not connect to the executor endpoint")
    } else if e.is_builder() {
        ExecError::failed("the request to the executor endpoint could not be built")
    } else {
        ExecError::transient("the request to the executor endpoint failed")
    }
}

fn body_error(e: reqwest::Error) -> ExecError {
    if e.is_timeout() {
        ExecError::Timeout
    } else {
        ExecError::transient("the executor endpoint's response was cut off")
    }
}

fn status_error(status: StatusCode) -> ExecError {
    let code = status.as_u16();
    if status.is_redirection() {
        ExecError::failed(format!(
            "the executor endpoint answered {code} (redirects are not followed)"
        ))
    } else if status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
    {
        ExecError::transient(format!("the executor endpoint answered {code}"))
    } else {
        ExecError::failed(format!("the executor endpoint answered {code}"))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::http::StatusCode as AxumStatus;
    use axum::response::Redirect;
    use axum::routing::post;
    use axum::Router;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;
    use crate::executor::test_support::{limits, text_job};

    /// Serves the test endpoints on 127.0.0.1 and returns the base URL.
    async fn endpoint() -> String {
        let router = Router::new()
            .route("/echo", post(|body: String| async move { body }))
            .route(
                "/fail",
                post(|| async { AxumStatus::INTERNAL_SERVER_ERROR }),
            )
            .route("/busy", post(|| async { AxumStatus::TOO_MANY_REQUESTS }))
            .route(
                "/bad",
                post(|| async { (AxumStatus::BAD_REQUEST, "token=hunter2") }),
            )
            .route("/huge", post(|| async { vec![b'a'; 1 << 20] }))
            .route(
                "/slow",
                post(|| async {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    "late"
                }),
            )
            .route(
                "/redirect",
                post(|| async { Redirect::temporary("http://elsewhere.invalid/") }),
            );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await });
        format!("http://{addr}")
    }

    async fn call(url: &str, limits: &Limits) -> Result<ExecOutput, ExecError> {
        let executor = HttpExecutor::new(url, limits).unwrap();
        executor.run(&text_job(5100, &["hello"], &[])).await
    }

    #[tokio::test]
    async fn job_is_posted_as_json_and_2xx_body_is_the_result() {
        let base = endpoint().await;
        let out = call(&format!("{base}/echo"), &limits(5000, 1 << 16, 1))
            .await
            .unwrap();
        let echoed: Job = serde_json::from_str(&out.content).unwrap();
        assert_eq!(echoed, text_job(5100, &["hello"], &[]));
    }

    #[tokio::test]
    async fn server_errors_and_throttling_are_retryable() {
        let base = endpoint().await;
        for path in ["fail", "busy"] {
            let err = call(&format!("{base}/{path}"), &limits(5000, 1024, 1))
                .await
                .unwrap_err();
            assert!(err.retryable(), "{path}: {err:?}");
        }
    }

    #[tokio::test]
    async fn client_errors_are_not_retryable_and_hide_the_body() {
        let base = endpoint().await;
        let err = call(&format!("{base}/bad"), &limits(5000, 1024, 1))
            .await
            .unwrap_err();
        assert!(!err.retryable());
        assert!(err.to_string().contains("400"), "{err}");
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[tokio::test]
    async fn redirects_are_not_followed() {
        let base = endpoint().await;
        let err = call(&format!("{base}/redirect"), &limits(5000, 1024, 1))
            .await
            .unwrap_err();
        assert!(!err.retryable());
        assert!(err.to_string().contains("307"), "{err}");
    }

    #[tokio::test]
    async fn huge_body_is_output_too_large() {
        let base = endpoint().await;
        let err = call(&format!("{base}/huge"), &limits(5000, 1024, 1)).await;
        assert_eq!(err, Err(ExecError::OutputTooLarge { limit: 1024 }));
    }

    #[tokio::test]
    async fn endless_chunked_body_is_cut_at_the_cap() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        // No Content-Length, so only reading chunk by chunk can catch the overrun.
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = vec![0; 64 * 1024];
            let _ = socket.read(&mut request).await;
            let head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
            socket.write_all(head).await.unwrap();
            let chunk = format!("400\r\n{}\r\n", "a".repeat(0x400));
            while socket.write_all(chunk.as_bytes()).await.is_ok() {}
        });
        let err = call(&url, &limits(10_000, 4096, 1)).await;
        assert_eq!(err, Err(ExecError::OutputTooLarge { limit: 4096 }));
        // The server stops only once we hang up, i.e. we stopped reading.
        tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn slow_endpoint_times_out() {
        let base = endpoint().await;
        let err = call(&format!("{base}/slow"), &limits(300, 1024, 1)).await;
        assert_eq!(err, Err(ExecError::Timeout));
    }

    #[tokio::test]
    async fn refused_connection_is_retryable() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        drop(listener);
        let err = call(&url, &limits(5000, 1024, 1)).await.unwrap_err();
        assert!(err.retryable(), "{err:?}");
    }

    #[test]
    fn only_http_urls_are_accepted() {
        let l = limits(1000, 1024, 1);
        assert!(matches!(
            HttpExecutor::new("file:///etc/passwd", &l),
            Err(HttpConfigError::UnsupportedScheme(s)) if s == "file"
        ));
        assert!(matches!(
            HttpExecutor::new("not a url", &l),
            Err(HttpConfigError::InvalidUrl)
        ));
        assert!(HttpExecutor::new("https://example.com/run", &l).is_ok());
    }
}
