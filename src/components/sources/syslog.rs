//! `syslog`: RFC 5424 and RFC 3164 messages over TCP (newline or
//! octet-counted framing, told apart per frame) or UDP (one message per
//! datagram), parsed by `syslog_loose` (Vector's parser) into
//! `{facility, severity, timestamp, hostname, appname, procid, msgid,
//! structured_data, message}`; parts a message lacks are left out. A
//! message that is neither format is a `decode` error of the source.
//!
//! Choices where the RFCs leave room:
//! - An RFC 3164 timestamp has no year and no zone: it is read as UTC, in
//!   the year that puts it at most a day after the time it is received.
//! - A line without a `<PRI>` (rsyslog's and journald's forwarding of
//!   local lines, some network gear) is parsed as RFC 3164 without
//!   `facility` and `severity`, rather than with RFC 3164's assumed
//!   `user.notice`: the event says what was sent.

use super::decode::{check_max_line_bytes, default_max_line_bytes};
use super::framing::Framing;
use super::socket::{
    check_endpoint, check_receive_buffer, default_idle_timeout, default_max_connections,
};
use super::stream_server::{Decoded, FrameDecoder, StreamLimits};
use crate::components::{ComponentError, Source, SourceContext};
use crate::config::duration::ConfigDuration;
use crate::core::{Event, Failed, Map, Number, Str, Value, message_event};
use chrono::{DateTime, Datelike, SecondsFormat, TimeZone, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use syslog_loose::{Message, ProcId, Variant};

/// The transport a `syslog` source listens on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SyslogMode {
    /// TCP connections; each frame is a line or octet-counted (`<length> <message>`, RFC 6587).
    Tcp,
    /// UDP datagrams, one message each (RFC 5426).
    Udp,
}

/// Receives syslog messages (RFC 5424 and RFC 3164) over TCP or UDP.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SyslogConfig {
    /// `tcp` or `udp`.
    pub mode: SyslogMode,
    /// The address to listen on, e.g. `0.0.0.0:514`.
    pub address: String,
    /// With `tcp`: most connections served at once (default 1000; at
    /// least 1). A connection over it is closed at once and counted as an
    /// error of type `connection_limit`.
    #[serde(default = "default_max_connections")]
    #[schemars(range(min = 1))]
    pub max_connections: usize,
    /// Longest message, in bytes (default 1 MiB = 1048576; at least 1). A
    /// longer one is a `decode` error of this source, handled by its
    /// `on_error` (a routed event carries its first 1 KiB in
    /// `.error.sample`); it is discarded as it arrives.
    #[serde(default = "default_max_line_bytes")]
    #[schemars(range(min = 1))]
    pub max_line_bytes: usize,
    /// With `tcp`: a connection that sends nothing for this long is closed
    /// and counted as an error of type `timeout` (default 5m; longer than 0s).
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: ConfigDuration,
    /// The kernel's receive buffer for each connection or the UDP socket,
    /// in bytes (`SO_RCVBUF`); for UDP, what a burst can queue before the
    /// kernel drops datagrams. Default: the kernel's.
    #[serde(default)]
    #[schemars(range(min = 1024))]
    pub receive_buffer_bytes: Option<usize>,
}

impl SyslogConfig {
    pub fn check(&self) -> Vec<(Vec<&'static str>, String)> {
        let mut problems = check_max_line_bytes(self.max_line_bytes);
        problems.extend(check_receive_buffer(self.receive_buffer_bytes));
        problems.extend(check_endpoint(false, Some(&self.address), None));
        if self.max_connections == 0 {
            problems.push((vec!["max_connections"], "must be at least 1".into()));
        }
        if self.idle_timeout.0.is_zero() {
            problems.push((vec!["idle_timeout"], "must be longer than 0s".into()));
        }
        problems
    }

    pub fn build(&self) -> SyslogSource {
        SyslogSource {
            config: self.clone(),
        }
    }
}

pub struct SyslogSource {
    config: SyslogConfig,
}

struct SyslogDecoder;

impl FrameDecoder for SyslogDecoder {
    fn decode(&self, frame: &[u8], out: &mut Decoded) {
        out.frames += 1;
        let text = String::from_utf8_lossy(frame);
        match parse(&text, Utc::now()) {
            Some(event) => out.batch.push(event),
            None => out.failed.push(
                Failed::new(
                    message_event(&text),
                    "message is neither RFC 5424 nor RFC 3164 syslog",
                    "decode",
                )
                .into(),
            ),
        }
    }

    fn datagram_lines(&self) -> bool {
        false
    }
}

/// The year of an RFC 3164 date (month, day, h, m, s) received at `now`:
/// this year, or last year if that would put it over a day ahead.
fn year_of(now: DateTime<Utc>, (month, day, h, m, s): (u32, u32, u32, u32, u32)) -> i32 {
    let year = now.year();
    match Utc.with_ymd_and_hms(year, month, day, h, m, s).single() {
        Some(t) if t > now + chrono::Duration::days(1) => year - 1,
        _ => year,
    }
}

/// One syslog message as an event, or `None` if it is neither format.
#[doc(hidden)] // pub for tests
pub fn parse(text: &str, now: DateTime<Utc>) -> Option<Event> {
    let text = text.trim_end_matches(['\n', '\r', '\0']);
    let get_year = move |date| year_of(now, date);
    let has_pri = text.trim_start().starts_with('<');
    let parsed;
    let message: Message<&str> = if has_pri {
        syslog_loose::parse_message_with_year_exact_tz(text, get_year, Some(Utc), Variant::Either)
            .ok()?
    } else {
        // Without a PRI: parsed with a placeholder one, which is then
        // dropped (the sender gave no facility or severity).
        parsed = format!("<13>{text}");
        let mut m = syslog_loose::parse_message_with_year_exact_tz(
            &parsed,
            get_year,
            Some(Utc),
            Variant::RFC3164,
        )
        .ok()?;
        m.facility = None;
        m.severity = None;
        m
    };
    Some(to_event(&message))
}

fn text(s: &str) -> Value {
    Value::String(Str::from(s))
}

fn to_event(m: &Message<&str>) -> Event {
    let mut e = Map::with_capacity(9);
    if let Some(f) = m.facility {
        e.insert("facility".into(), text(f.as_str()));
    }
    if let Some(s) = m.severity {
        e.insert("severity".into(), text(s.as_str()));
    }
    if let Some(t) = m.timestamp {
        let t = t.to_rfc3339_opts(SecondsFormat::AutoSi, true);
        e.insert("timestamp".into(), text(&t));
    }
    let fields = [("hostname", m.hostname), ("appname", m.appname)];
    for (key, value) in fields {
        if let Some(v) = value.filter(|v| !v.is_empty() && *v != "-") {
            e.insert(key.into(), text(v));
        }
    }
    match &m.procid {
        Some(ProcId::PID(pid)) => {
            e.insert("procid".into(), Value::Number(Number::from(*pid)));
        }
        Some(ProcId::Name(name)) if !name.is_empty() && *name != "-" => {
            e.insert("procid".into(), text(name));
        }
        _ => {}
    }
    if let Some(v) = m.msgid.filter(|v| !v.is_empty() && *v != "-") {
        e.insert("msgid".into(), text(v));
    }
    if !m.structured_data.is_empty() {
        let mut sd = Map::with_capacity(m.structured_data.len());
        for element in &m.structured_data {
            let mut params = Map::with_capacity(element.params.len());
            for (name, value) in element.params() {
                params.insert(Str::from(*name), Value::String(Str::from(value)));
            }
            sd.insert(Str::from(element.id), Value::Object(params));
        }
        e.insert("structured_data".into(), Value::Object(sd));
    }
    // RFC 5424 §6.4: a UTF-8 message may start with a byte order mark.
    let msg = m.msg.strip_prefix('\u{feff}').unwrap_or(m.msg);
    if !msg.is_empty() {
        e.insert("message".into(), text(msg));
    }
    Value::Object(e)
}

#[async_trait::async_trait]
impl Source for SyslogSource {
    async fn run(self: Box<Self>, ctx: SourceContext) -> Result<(), ComponentError> {
        let c = &self.config;
        let limits = StreamLimits {
            framing: Framing::Auto,
            max_line_bytes: c.max_line_bytes,
            max_connections: c.max_connections,
            idle_timeout: c.idle_timeout.0,
            receive_buffer_bytes: c.receive_buffer_bytes,
        };
        let udp = c.mode == SyslogMode::Udp;
        super::socket::serve_address(udp, &c.address, limits, Arc::new(SyslogDecoder), ctx).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn a_3164_date_takes_the_year_that_is_not_ahead_of_now() {
        let now = at("2026-01-02T10:00:00Z");
        assert_eq!(year_of(now, (1, 3, 9, 0, 0)), 2026, "within a day ahead");
        assert_eq!(year_of(now, (12, 31, 23, 0, 0)), 2025);
        assert_eq!(
            year_of(at("2026-12-01T00:00:00Z"), (10, 11, 22, 14, 15)),
            2026
        );
    }

    #[test]
    fn rfc5424_with_structured_data_and_3164_without_pri() {
        let now = at("2026-12-01T00:00:00Z");
        let e = parse(
            "<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut=\"3\" eventSource=\"Application\"] \u{feff}An application event",
            now,
        )
        .unwrap();
        assert_eq!(
            serde_json::Value::from(&e),
            serde_json::json!({"facility": "local4", "severity": "notice",
                "timestamp": "2003-10-11T22:14:15.003Z", "hostname": "mymachine.example.com",
                "appname": "evntslog", "msgid": "ID47",
                "structured_data": {"exampleSDID@32473": {"iut": "3", "eventSource": "Application"}},
                "message": "An application event"})
        );
        let e = parse("Oct 11 22:14:15 mymachine su[12]: 'su root' failed", now).unwrap();
        assert_eq!(
            serde_json::Value::from(&e),
            serde_json::json!({"timestamp": "2026-10-11T22:14:15Z", "hostname": "mymachine",
                "appname": "su", "procid": 12, "message": "'su root' failed"})
        );
        assert!(parse("just some words", now).is_none());
        assert!(parse("<34>not a date at all", now).is_none());
    }
}
