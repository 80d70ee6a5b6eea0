//! `--access-log-format`: access lines written when the response is over, with gunicorn's and
//! hypercorn's atoms (`%(h)s %(r)s %(s)s %(b)s %(D)s`, `%({name}i)s`, ...), formatted in Rust.

use std::fmt::Write as _;
use std::rc::Rc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use http::header::{REFERER, USER_AGENT};
use http::request::Parts;
use http::{HeaderMap, HeaderName, HeaderValue};
use pyo3::intern;
use pyo3::prelude::*;

use crate::server::ServerState;

/// One value of the line.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Atom {
    /// `h`: the client address.
    RemoteAddress,
    /// `l`, `u`: identd user and authenticated user, never known: `-`.
    Dash,
    /// `t`: when the request arrived, `[22/Nov/2026:03:14:19 +0000]`.
    Time,
    /// `r`: the request line.
    RequestLine,
    /// `m`: the method.
    Method,
    /// `U`: the path, without the query.
    Path,
    /// `q`: the query string.
    Query,
    /// `H`: the protocol, `HTTP/1.1`.
    Protocol,
    /// `s`: the status code.
    Status,
    /// `B`: response body bytes.
    Bytes,
    /// `b`: response body bytes, `-` for none.
    BytesOrDash,
    /// `f`: the `referer` header.
    Referer,
    /// `a`: the `user-agent` header.
    UserAgent,
    /// `T`: duration in whole seconds.
    Seconds,
    /// `M`: duration in milliseconds.
    Millis,
    /// `D`: duration in microseconds.
    Micros,
    /// `L`: duration in decimal seconds.
    DecimalSeconds,
    /// `p`: the worker's process id.
    Pid,
    /// `{name}i`: a request header.
    RequestHeader(HeaderName),
    /// `{name}o`: a response header.
    ResponseHeader(HeaderName),
}

/// A piece of the line: literal text or an atom.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Text(String),
    Atom(Atom),
}

/// A parsed `--access-log-format`.
#[derive(Clone, Debug)]
pub(crate) struct AccessFormat {
    pieces: Vec<Piece>,
}

impl AccessFormat {
    /// Parse a format; the error names the atom it does not know.
    pub(crate) fn parse(format: &str) -> Result<Self, String> {
        let mut pieces = Vec::new();
        let mut text = String::new();
        let mut rest = format;
        while let Some(start) = rest.find('%') {
            text.push_str(&rest[..start]);
            rest = &rest[start..];
            if let Some(after) = rest.strip_prefix("%%") {
                text.push('%');
                rest = after;
                continue;
            }
            let Some(end) = rest.strip_prefix("%(").and_then(|r| r.find(")s")) else {
                return Err(format!("--access-log-format: expected %(name)s at {rest:?}"));
            };
            let name = &rest[2..2 + end];
            if !text.is_empty() {
                pieces.push(Piece::Text(std::mem::take(&mut text)));
            }
            pieces.push(Piece::Atom(atom(name)?));
            rest = &rest[2 + end + 2..];
        }
        text.push_str(rest);
        if !text.is_empty() {
            pieces.push(Piece::Text(text));
        }
        Ok(Self { pieces })
    }

    fn request_headers(&self) -> impl Iterator<Item = &HeaderName> {
        self.pieces.iter().filter_map(|piece| match piece {
            Piece::Atom(Atom::RequestHeader(name)) => Some(name),
            Piece::Atom(Atom::Referer) => Some(&REFERER),
            Piece::Atom(Atom::UserAgent) => Some(&USER_AGENT),
            _ => None,
        })
    }

    fn response_headers(&self) -> impl Iterator<Item = &HeaderName> {
        self.pieces.iter().filter_map(|piece| match piece {
            Piece::Atom(Atom::ResponseHeader(name)) => Some(name),
            _ => None,
        })
    }
}

fn atom(name: &str) -> Result<Atom, String> {
    if let Some(header) = name.strip_prefix('{') {
        let (header, kind) =
            header.split_once('}').ok_or_else(|| format!("--access-log-format: bad atom %({name})s"))?;
        let header = HeaderName::try_from(header.to_ascii_lowercase())
            .map_err(|_| format!("--access-log-format: bad header name in %({name})s"))?;
        return match kind {
            "i" => Ok(Atom::RequestHeader(header)),
            "o" => Ok(Atom::ResponseHeader(header)),
            _ => Err(format!("--access-log-format: %({name})s must end in }}i or }}o")),
        };
    }
    Ok(match name {
        "h" => Atom::RemoteAddress,
        "l" | "u" => Atom::Dash,
        "t" => Atom::Time,
        "r" => Atom::RequestLine,
        "m" => Atom::Method,
        "U" => Atom::Path,
        "q" => Atom::Query,
        "H" => Atom::Protocol,
        "s" => Atom::Status,
        "B" => Atom::Bytes,
        "b" => Atom::BytesOrDash,
        "f" => Atom::Referer,
        "a" => Atom::UserAgent,
        "T" => Atom::Seconds,
        "M" => Atom::Millis,
        "D" => Atom::Micros,
        "L" => Atom::DecimalSeconds,
        "p" => Atom::Pid,
        other => return Err(format!("--access-log-format: unknown atom %({other})s")),
    })
}

/// What one request's line needs, kept from the request until the response is over.
pub(crate) struct AccessRecord {
    state: Rc<ServerState>,
    started: Instant,
    arrived: SystemTime,
    client: String,
    method: String,
    path: String,
    query: String,
    version: &'static str,
    request_headers: Vec<Option<HeaderValue>>,
    response_headers: Vec<Option<HeaderValue>>,
    status: u16,
}

impl AccessRecord {
    /// Start the record of a request; `client` and `path` as the uvicorn-style line shows them.
    pub(crate) fn new(state: &Rc<ServerState>, format: &AccessFormat, parts: &Parts, client: String) -> Self {
        let version = match parts.version {
            http::Version::HTTP_10 => "HTTP/1.0",
            http::Version::HTTP_2 => "HTTP/2",
            http::Version::HTTP_3 => "HTTP/3",
            _ => "HTTP/1.1",
        };
        Self {
            state: state.clone(),
            started: Instant::now(),
            arrived: SystemTime::now(),
            client,
            method: parts.method.to_string(),
            path: [state.settings.root_path.as_str(), parts.uri.path()].concat(),
            query: parts.uri.query().unwrap_or_default().to_owned(),
            version,
            request_headers: format.request_headers().map(|name| parts.headers.get(name).cloned()).collect(),
            response_headers: Vec::new(),
            status: 0,
        }
    }

    /// Note the response head.
    pub(crate) fn set_response(&mut self, status: u16, headers: &HeaderMap) {
        self.status = status;
        if let Some(format) = &self.state.settings.access_log_format {
            self.response_headers = format.response_headers().map(|name| headers.get(name).cloned()).collect();
        }
    }

    /// Write the line: the response is over, `bytes` of body were sent (status 500 if the
    /// application never started a response).
    pub(crate) fn log(mut self, bytes: u64) {
        if self.status == 0 {
            self.status = 500;
        }
        // A HEAD response carries no content, whatever length it announces.
        let bytes = if self.method == "HEAD" { 0 } else { bytes };
        let Some(format) = &self.state.settings.access_log_format else { return };
        let line = self.format(format, bytes);
        Python::attach(|py| {
            let logger = self.state.access_logger.bind(py);
            if let Err(err) = logger.call_method1(intern!(py, "info"), (intern!(py, "%s"), line)) {
                err.write_unraisable(py, None);
            }
        });
    }

    fn format(&self, format: &AccessFormat, bytes: u64) -> String {
        let elapsed = self.started.elapsed();
        let mut line = String::with_capacity(128);
        let (mut request_headers, mut response_headers) = (self.request_headers.iter(), self.response_headers.iter());
        let header = |value: Option<&Option<HeaderValue>>| {
            value.and_then(Option::as_ref).and_then(|v| v.to_str().ok()).unwrap_or("-").to_owned()
        };
        for piece in &format.pieces {
            let _ = match piece {
                Piece::Text(text) => write!(line, "{text}"),
                Piece::Atom(atom) => match atom {
                    Atom::RemoteAddress => write!(line, "{}", if self.client.is_empty() { "-" } else { &self.client }),
                    Atom::Dash => write!(line, "-"),
                    Atom::Time => write!(line, "[{}]", common_log_time(self.arrived)),
                    Atom::RequestLine => {
                        let separator = if self.query.is_empty() { "" } else { "?" };
                        write!(line, "{} {}{separator}{} {}", self.method, self.path, self.query, self.version)
                    }
                    Atom::Method => write!(line, "{}", self.method),
                    Atom::Path => write!(line, "{}", self.path),
                    Atom::Query => write!(line, "{}", self.query),
                    Atom::Protocol => write!(line, "{}", self.version),
                    Atom::Status => write!(line, "{}", self.status),
                    Atom::Bytes => write!(line, "{bytes}"),
                    Atom::BytesOrDash if bytes == 0 => write!(line, "-"),
                    Atom::BytesOrDash => write!(line, "{bytes}"),
                    Atom::Referer | Atom::UserAgent | Atom::RequestHeader(_) => {
                        write!(line, "{}", header(request_headers.next()))
                    }
                    Atom::ResponseHeader(_) => write!(line, "{}", header(response_headers.next())),
                    Atom::Seconds => write!(line, "{}", elapsed.as_secs()),
                    Atom::Millis => write!(line, "{}", elapsed.as_millis()),
                    Atom::Micros => write!(line, "{}", elapsed.as_micros()),
                    Atom::DecimalSeconds => write!(line, "{:.6}", elapsed.as_secs_f64()),
                    Atom::Pid => write!(line, "{}", std::process::id()),
                },
            };
        }
        line
    }
}

/// `22/Nov/2026:03:14:19 +0000`, the Common Log Format's time, in UTC.
fn common_log_time(at: SystemTime) -> String {
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let seconds = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, of_day) = (seconds / 86_400, seconds % 86_400);
    let (year, month, day) = civil_from_days(i64::try_from(days).unwrap_or(0));
    format!(
        "{day:02}/{}/{year}:{:02}:{:02}:{:02} +0000",
        MONTHS[usize::try_from(month - 1).unwrap_or(0)],
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

/// Year, month (1-12) and day of the month of a count of days since 1970-01-01, in the
/// proleptic Gregorian calendar (the "days from civil" inverse, by eras of 400 years).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 { shifted_month + 3 } else { shifted_month - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn parses_atoms_text_and_escapes() {
        let format = AccessFormat::parse(r#"%(h)s "%(r)s" %(s)s 100%% %({X-Id}i)s"#).unwrap();
        assert_eq!(
            format.pieces,
            vec![
                Piece::Atom(Atom::RemoteAddress),
                Piece::Text(" \"".into()),
                Piece::Atom(Atom::RequestLine),
                Piece::Text("\" ".into()),
                Piece::Atom(Atom::Status),
                Piece::Text(" 100% ".into()),
                Piece::Atom(Atom::RequestHeader(HeaderName::from_static("x-id"))),
            ]
        );
    }

    #[test]
    fn refuses_unknown_atoms_and_bad_syntax() {
        assert!(AccessFormat::parse("%(z)s").unwrap_err().contains("unknown atom %(z)s"));
        assert!(AccessFormat::parse("%(h").is_err());
        assert!(AccessFormat::parse("%({x}z)s").is_err());
    }

    #[test]
    fn common_log_time_of_known_instants() {
        assert_eq!(common_log_time(UNIX_EPOCH), "01/Jan/1970:00:00:00 +0000");
        let leap_day = UNIX_EPOCH + Duration::from_secs(951_782_400 + 3_661);
        assert_eq!(common_log_time(leap_day), "29/Feb/2000:01:01:01 +0000");
        let later = UNIX_EPOCH + Duration::from_secs(1_795_317_259);
        assert_eq!(common_log_time(later), "22/Nov/2026:03:14:19 +0000");
    }
}
