//! One number from a Prometheus server: an instant query over its HTTP API
//! (`GET /api/v1/query`). No answer is never a number: an unreachable
//! server, an HTTP or query error, an empty result, more than one series, NaN
//! or an infinity is each an error that says which.

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use std::fmt;
use std::time::Duration;

/// A Prometheus server, by its base URL (`http://HOST:PORT[/PREFIX]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Server {
    host: String,
    port: u16,
    /// A path prefix (Prometheus behind `--web.route-prefix`), without a trailing `/`.
    prefix: String,
}

/// Why a base URL is not one farmctl can query.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadUrl(pub String);

impl std::str::FromStr for Server {
    type Err = BadUrl;

    fn from_str(url: &str) -> Result<Server, BadUrl> {
        let rest = match url.split_once("://") {
            Some(("http", rest)) => rest,
            Some(("https", _)) => return Err(BadUrl(format!("`{url}`: https is not supported yet; reach Prometheus over http (a local port or an SSH tunnel)"))),
            _ => return Err(BadUrl(format!("expected a URL such as `http://prometheus:9090`, found `{url}`"))),
        };
        let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (h, p.parse::<u16>().map_err(|_| BadUrl(format!("`{url}`: expected a port from 1 to 65535 after `:`")))?),
            _ => (authority, 80),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c == '@' || c == '?' || c == '#') {
            return Err(BadUrl(format!("`{url}`: expected a host name or address before the port")));
        }
        Ok(Server { host: host.to_string(), port, prefix: path.trim_end_matches('/').split('?').next().unwrap_or_default().to_string() })
    }
}

impl fmt::Display for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        write!(f, "http://{host}:{}", self.port)?;
        if !self.prefix.is_empty() {
            write!(f, "/{}", self.prefix)?;
        }
        Ok(())
    }
}

/// Why a query gave no number.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum QueryError {
    #[error("Prometheus at {0} does not answer: {1}")]
    Unreachable(String, String),
    #[error("Prometheus answered HTTP {0}: {1}")]
    Http(u16, String),
    #[error("Prometheus refused the query: {0}")]
    Refused(String),
    #[error("the query returned no series: no data is never a pass")]
    Empty,
    #[error("the query returned {0} series where one was expected; aggregate it (sum, max, ...)")]
    Many(usize),
    #[error("the query returned {0}, which is not a finite number")]
    NotFinite(String),
    #[error("Prometheus's answer is not one farmctl understands: {0}")]
    Malformed(String),
}

/// Characters left as they are in a query string's value.
const VALUE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

impl Server {
    /// The value of `query` now, within `limit`.
    pub async fn query(&self, query: &str, limit: Duration) -> Result<f64, QueryError> {
        let path = format!("{}/api/v1/query?query={}", if self.prefix.is_empty() { String::new() } else { format!("/{}", self.prefix) }, percent_encoding::utf8_percent_encode(query, VALUE));
        let (status, body) = match tokio::time::timeout(limit, self.get(&path)).await {
            Ok(r) => r?,
            Err(_) => return Err(QueryError::Unreachable(self.to_string(), format!("no answer within {limit:?}"))),
        };
        value(status, &body)
    }

    async fn get(&self, path: &str) -> Result<(u16, Vec<u8>), QueryError> {
        let unreachable = |e: &dyn fmt::Display| QueryError::Unreachable(self.to_string(), e.to_string());
        let stream = tokio::net::TcpStream::connect((self.host.as_str(), self.port)).await.map_err(|e| unreachable(&e))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.map_err(|e| unreachable(&e))?;
        let driving = tokio::spawn(conn);
        let request = hyper::Request::get(path).header(hyper::header::HOST, format!("{}:{}", self.host, self.port)).body(Empty::<Bytes>::new()).map_err(|e| QueryError::Malformed(e.to_string()))?;
        let response = sender.send_request(request).await.map_err(|e| unreachable(&e))?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.map_err(|e| unreachable(&e))?.to_bytes().to_vec();
        driving.abort();
        Ok((status, body))
    }
}

/// The one number in an instant query's answer.
fn value(status: u16, body: &[u8]) -> Result<f64, QueryError> {
    let v: serde_json::Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(_) if status != 200 => return Err(QueryError::Http(status, String::from_utf8_lossy(body).chars().take(200).collect())),
        Err(e) => return Err(QueryError::Malformed(e.to_string())),
    };
    if v["status"] != "success" {
        let why = v["error"].as_str().unwrap_or("no reason given");
        return Err(QueryError::Refused(format!("{} ({})", why, v["errorType"].as_str().unwrap_or("error"))));
    }
    let data = &v["data"];
    let sample = match data["resultType"].as_str() {
        Some("scalar") => data["result"].clone(),
        Some("vector") => {
            let series = data["result"].as_array().ok_or_else(|| QueryError::Malformed("a vector without a result list".into()))?;
            match series.len() {
                0 => return Err(QueryError::Empty),
                1 => series[0]["value"].clone(),
                n => return Err(QueryError::Many(n)),
            }
        }
        Some(other) => return Err(QueryError::Malformed(format!("a {other} result; expected an instant vector or a scalar"))),
        None => return Err(QueryError::Malformed("no resultType".into())),
    };
    let text = sample[1].as_str().ok_or_else(|| QueryError::Malformed(format!("a sample without a value: {sample}")))?;
    match text.parse::<f64>() {
        Ok(x) if x.is_finite() => Ok(x),
        Ok(_) => Err(QueryError::NotFinite(text.to_string())),
        Err(_) => Err(QueryError::Malformed(format!("the value `{text}` is not a number"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_is_a_server_or_a_named_refusal() {
        let s: Server = "http://127.0.0.1:9090".parse().unwrap();
        assert_eq!((s.host.as_str(), s.port, s.prefix.as_str()), ("127.0.0.1", 9090, ""));
        assert_eq!("http://prom/monitor/".parse::<Server>().unwrap().to_string(), "http://prom:80/monitor");
        assert_eq!("http://[::1]:9090".parse::<Server>().unwrap().to_string(), "http://[::1]:9090");
        assert!("https://prom:9090".parse::<Server>().unwrap_err().0.contains("https is not supported"));
        assert!("prom:9090".parse::<Server>().is_err());
        assert!("http://prom:99999".parse::<Server>().is_err());
    }

    #[test]
    fn no_answer_is_never_a_number() {
        let ok = |b: &str| value(200, b.as_bytes());
        assert_eq!(ok(r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"0.25"]}]}}"#), Ok(0.25));
        assert_eq!(ok(r#"{"status":"success","data":{"resultType":"scalar","result":[1,"3"]}}"#), Ok(3.0));
        assert_eq!(ok(r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#), Err(QueryError::Empty));
        assert_eq!(ok(r#"{"status":"success","data":{"resultType":"vector","result":[{"value":[1,"1"]},{"value":[1,"2"]}]}}"#), Err(QueryError::Many(2)));
        for v in ["NaN", "+Inf", "-Inf"] {
            assert_eq!(ok(&format!(r#"{{"status":"success","data":{{"resultType":"vector","result":[{{"value":[1,"{v}"]}}]}}}}"#)), Err(QueryError::NotFinite(v.into())));
        }
        assert!(matches!(value(400, br#"{"status":"error","errorType":"bad_data","error":"parse error at char 5"}"#), Err(QueryError::Refused(e)) if e.contains("parse error")));
        assert!(matches!(value(502, b"Bad Gateway"), Err(QueryError::Http(502, _))));
        assert!(matches!(ok(r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#), Err(QueryError::Malformed(_))));
    }

    #[tokio::test]
    async fn a_server_that_is_not_there_is_named() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let s: Server = format!("http://127.0.0.1:{port}").parse().unwrap();
        assert!(matches!(s.query("up", Duration::from_secs(2)).await, Err(QueryError::Unreachable(at, _)) if at.contains(&port.to_string())));
    }
}
