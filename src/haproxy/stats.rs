//! Typed statistics from the CSV that HAProxy's runtime API `show stat`
//! prints: one [`StatRow`] per frontend, backend, server and listener.
//!
//! Owns the parse only: columns are found by the header's names (their
//! positions move between HAProxy versions), and it never panics on any
//! input. Must not fetch (the caller sends `show stat` through
//! [`super::socket`]) and must not filter: which proxies matter (the
//! `stats` listener or not) is the caller's decision.

use serde::Serialize;

/// What a row describes, from the `type` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum StatKind {
    /// `type` 0: the frontend of a proxy.
    Frontend,
    /// `type` 1: the backend of a proxy.
    Backend,
    /// `type` 2: one server of a backend.
    Server,
    /// `type` 3: one listening socket (only with `option socket-stats`).
    Listener,
}

/// Counts of HTTP responses by status class (`hrsp_*`; zero for TCP).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ResponseClasses {
    /// `hrsp_1xx`.
    #[serde(rename = "1xx")]
    pub status_1xx: u64,
    /// `hrsp_2xx`.
    #[serde(rename = "2xx")]
    pub status_2xx: u64,
    /// `hrsp_3xx`.
    #[serde(rename = "3xx")]
    pub status_3xx: u64,
    /// `hrsp_4xx`.
    #[serde(rename = "4xx")]
    pub status_4xx: u64,
    /// `hrsp_5xx`.
    #[serde(rename = "5xx")]
    pub status_5xx: u64,
    /// `hrsp_other`: responses with a status outside 1xx–5xx.
    pub other: u64,
}

/// One line of `show stat`. Counters HAProxy leaves empty for this kind of
/// row read as 0; fields that are meaningful only for some kinds are
/// `None` when empty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatRow {
    /// `pxname`: the frontend, backend or listen section.
    pub proxy: String,
    /// `svname`: `FRONTEND`, `BACKEND`, a server's name or a listener's.
    pub name: String,
    /// `type`.
    pub kind: StatKind,
    /// `status`: `OPEN`, `UP`, `DOWN`, `MAINT`, `no check`, …
    pub status: String,
    /// `scur`.
    pub current_sessions: u64,
    /// `smax`.
    pub max_sessions: u64,
    /// `slim`.
    pub session_limit: Option<u64>,
    /// `stot`.
    pub total_sessions: u64,
    /// `bin`.
    pub bytes_in: u64,
    /// `bout`.
    pub bytes_out: u64,
    /// `req_rate`: HTTP requests per second over the last second
    /// (frontends only).
    pub request_rate: Option<u64>,
    /// `rate`: sessions per second over the last second.
    pub session_rate: u64,
    /// `hrsp_1xx` … `hrsp_other`.
    pub responses: ResponseClasses,
    /// `weight`.
    pub weight: Option<u64>,
    /// `check_status`: the last health check's result code (`L4OK`,
    /// `L7STS`, …), for checked servers.
    pub check_status: Option<String>,
    /// `lastchg`: seconds since the last UP/DOWN transition.
    pub last_change_seconds: Option<u64>,
    /// `addr`: a server's or listener's address.
    pub address: Option<String>,
}

/// Parses the output of `show stat`. Lines before a header, lines without
/// a proxy, name or known `type`, and lines with a non-numeric counter are
/// skipped: HAProxy's output is trusted, but a torn or foreign line must
/// cost that line only.
pub fn parse_show_stat(csv: &str) -> Vec<StatRow> {
    let mut columns: Option<Columns> = None;
    let mut rows = Vec::new();
    for line in csv.lines() {
        if let Some(header) = line.strip_prefix("# ") {
            columns = Some(Columns::from_header(header));
        } else if let Some(columns) = &columns
            && let Some(row) = columns.row(&split_csv(line))
        {
            rows.push(row);
        }
    }
    rows
}

/// The position of each column this parser reads, by header name.
struct Columns {
    names: Vec<String>,
}

impl Columns {
    fn from_header(header: &str) -> Columns {
        Columns {
            names: split_csv(header),
        }
    }

    /// The non-empty value of column `name` in `fields`.
    fn get<'a>(&self, fields: &'a [String], name: &str) -> Option<&'a str> {
        let index = self.names.iter().position(|n| n == name)?;
        fields
            .get(index)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// An optional counter: `Some(None)` when empty, `None` when malformed.
    fn optional(&self, fields: &[String], name: &str) -> Option<Option<u64>> {
        match self.get(fields, name) {
            None => Some(None),
            Some(value) => value.parse().ok().map(Some),
        }
    }

    /// A counter that reads as 0 when empty; `None` when malformed.
    fn counter(&self, fields: &[String], name: &str) -> Option<u64> {
        self.optional(fields, name).map(|v| v.unwrap_or(0))
    }

    fn row(&self, fields: &[String]) -> Option<StatRow> {
        let kind = match self.get(fields, "type")? {
            "0" => StatKind::Frontend,
            "1" => StatKind::Backend,
            "2" => StatKind::Server,
            "3" => StatKind::Listener,
            _ => return None,
        };
        let text = |name| self.get(fields, name).map(str::to_owned);
        Some(StatRow {
            proxy: text("pxname")?,
            name: text("svname")?,
            kind,
            status: text("status").unwrap_or_default(),
            current_sessions: self.counter(fields, "scur")?,
            max_sessions: self.counter(fields, "smax")?,
            session_limit: self.optional(fields, "slim")?,
            total_sessions: self.counter(fields, "stot")?,
            bytes_in: self.counter(fields, "bin")?,
            bytes_out: self.counter(fields, "bout")?,
            request_rate: self.optional(fields, "req_rate")?,
            session_rate: self.counter(fields, "rate")?,
            responses: ResponseClasses {
                status_1xx: self.counter(fields, "hrsp_1xx")?,
                status_2xx: self.counter(fields, "hrsp_2xx")?,
                status_3xx: self.counter(fields, "hrsp_3xx")?,
                status_4xx: self.counter(fields, "hrsp_4xx")?,
                status_5xx: self.counter(fields, "hrsp_5xx")?,
                other: self.counter(fields, "hrsp_other")?,
            },
            weight: self.optional(fields, "weight")?,
            check_status: text("check_status"),
            last_change_seconds: self.optional(fields, "lastchg")?,
            address: text("addr"),
        })
    }
}

/// Splits one CSV line. HAProxy quotes a field that contains a comma or a
/// quote (check descriptions, agent replies) with `"`, doubling inner
/// quotes; an unterminated quote runs to the end of the line.
fn split_csv(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', false) if field.is_empty() => quoted = true,
            ('"', true) if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            ('"', true) => quoted = false,
            (',', false) => fields.push(std::mem::take(&mut field)),
            _ => field.push(c),
        }
    }
    fields.push(field);
    fields
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// `show stat` from HAProxy 2.6.12 (Debian): a frontend with
    /// `option socket-stats` (hence the listener row `sock-1`), six
    /// requests (three answered by the frontend itself, three passed to
    /// `s2`), a checked server that is down and one without checks.
    const CAPTURE: &str = "\
# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,throttle,lbtot,tracked,type,rate,rate_lim,rate_max,check_status,check_code,check_duration,hrsp_1xx,hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,hrsp_other,hanafail,req_rate,req_rate_max,req_tot,cli_abrt,srv_abrt,comp_in,comp_out,comp_byp,comp_rsp,lastsess,last_chk,last_agt,qtime,ctime,rtime,ttime,agent_status,agent_code,agent_duration,check_desc,agent_desc,check_rise,check_fall,check_health,agent_rise,agent_fall,agent_health,addr,cookie,mode,algo,conn_rate,conn_rate_max,conn_tot,intercepted,dcon,dses,wrew,connect,reuse,cache_lookups,cache_hits,srv_icur,src_ilim,qtime_max,ctime_max,rtime_max,ttime_max,eint,idle_conn_cur,safe_conn_cur,used_conn_cur,need_conn_est,uweight,agg_server_status,agg_server_check_status,agg_check_status,-,ssl_sess,ssl_reused_sess,ssl_failed_handshake,h2_headers_rcvd,h2_data_rcvd,h2_settings_rcvd,h2_rst_stream_rcvd,h2_goaway_rcvd,h2_detected_conn_protocol_errors,h2_detected_strm_protocol_errors,h2_rst_stream_resp,h2_goaway_resp,h2_open_connections,h2_backend_open_streams,h2_total_connections,h2_backend_total_streams,h1_open_connections,h1_open_streams,h1_total_connections,h1_total_streams,h1_bytes_in,h1_bytes_out,h1_spliced_bytes_in,h1_spliced_bytes_out,
fe,FRONTEND,,,0,2,500,6,495,1719,0,0,0,,,,,OPEN,,,,,,,,,1,2,0,,,,0,6,0,6,,,,0,3,0,3,0,0,,6,6,6,,,0,0,0,0,,,,,,,,,,,,,,,,,,,,,http,,6,6,6,3,0,0,0,,,0,0,,,,,,,0,,,,,,,,,-,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,6,6,477,1773,0,0,
fe,sock-1,,,0,2,0,6,495,1719,0,0,0,,,,,OPEN,,,,,,,,,1,2,1,,,,3,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,127.0.0.1:18081,,http,,,,,,0,0,0,,,,,,,,,,,0,,,,,,,,,-,0,0,0,,,,,,,,,,,,,,,,,,,,,,
be,s1,0,0,0,0,,0,0,0,,0,,0,0,0,0,DOWN,1,1,0,1,1,2,2,,1,3,1,,0,,2,0,,0,L4CON,,0,0,0,0,0,0,0,,,,0,0,0,,,,,-1,Connection refused,,0,0,0,0,,,,Layer4 connection problem,,2,3,0,,,,127.0.0.1:18082,,http,,,,,,,,0,0,0,,,0,,0,0,0,0,0,0,0,0,1,1,,,,-,0,0,0,,,,,,,,,,,,,,,,,,,,,,
be,s2,0,0,0,1,,3,249,1500,,0,,0,0,0,0,no check,50,1,0,,,2,,,1,3,2,,3,,2,3,,3,,,,0,0,0,3,0,0,,,,3,0,0,,,,,1,,,0,0,1,1,,,,,,,,,,,,127.0.0.1:18084,,http,,,,,,,,0,3,0,,,0,,0,0,3,3,0,0,0,0,1,50,,,,-,0,0,0,,,,,,,,,,,,,,,,,,,,,,
be,BACKEND,0,0,0,1,50,3,249,1500,0,0,,0,0,0,0,UP,50,1,0,,0,2,0,,1,3,0,,3,,1,3,,3,,,,0,0,0,3,0,0,,,,3,0,0,0,0,0,0,1,,,0,0,1,1,,,,,,,,,,,,,,http,roundrobin,,,,,,,0,3,0,0,0,,,0,0,3,3,0,,,,,50,0,0,0,-,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,3,3,1560,240,0,0,

";

    fn row<'a>(rows: &'a [StatRow], proxy: &str, name: &str) -> &'a StatRow {
        rows.iter()
            .find(|r| r.proxy == proxy && r.name == name)
            .unwrap_or_else(|| panic!("no row {proxy}/{name} in {rows:?}"))
    }

    #[test]
    fn every_row_of_a_real_capture_is_parsed_in_order() {
        let rows = parse_show_stat(CAPTURE);
        let names: Vec<_> = rows
            .iter()
            .map(|r| (r.proxy.as_str(), r.name.as_str(), r.kind))
            .collect();
        assert_eq!(
            names,
            [
                ("fe", "FRONTEND", StatKind::Frontend),
                ("fe", "sock-1", StatKind::Listener),
                ("be", "s1", StatKind::Server),
                ("be", "s2", StatKind::Server),
                ("be", "BACKEND", StatKind::Backend),
            ]
        );
    }

    #[test]
    fn a_frontend_row_carries_sessions_rates_bytes_and_responses() {
        let rows = parse_show_stat(CAPTURE);
        let frontend = row(&rows, "fe", "FRONTEND");
        assert_eq!(
            *frontend,
            StatRow {
                proxy: "fe".into(),
                name: "FRONTEND".into(),
                kind: StatKind::Frontend,
                status: "OPEN".into(),
                current_sessions: 0,
                max_sessions: 2,
                session_limit: Some(500),
                total_sessions: 6,
                bytes_in: 495,
                bytes_out: 1719,
                request_rate: Some(6),
                session_rate: 6,
                responses: ResponseClasses {
                    status_2xx: 3,
                    status_4xx: 3,
                    ..ResponseClasses::default()
                },
                weight: None,
                check_status: None,
                last_change_seconds: None,
                address: None,
            }
        );
    }

    #[test]
    fn a_checked_server_row_carries_its_check_weight_and_address() {
        let rows = parse_show_stat(CAPTURE);
        let server = row(&rows, "be", "s1");
        assert_eq!(server.status, "DOWN");
        assert_eq!(server.check_status.as_deref(), Some("L4CON"));
        assert_eq!(server.weight, Some(1));
        assert_eq!(server.last_change_seconds, Some(2));
        assert_eq!(server.address.as_deref(), Some("127.0.0.1:18082"));
        assert_eq!(server.session_limit, None);
        assert_eq!(server.request_rate, None);
    }

    #[test]
    fn an_unchecked_server_row_has_no_check_status() {
        let rows = parse_show_stat(CAPTURE);
        let server = row(&rows, "be", "s2");
        assert_eq!(server.status, "no check");
        assert_eq!(server.check_status, None);
        assert_eq!(server.weight, Some(50));
        assert_eq!(server.total_sessions, 3);
        assert_eq!(server.responses.status_4xx, 3);
    }

    #[test]
    fn columns_are_found_by_name_not_position() {
        let csv = "# type,svname,pxname,scur,status\n2,web1,app,7,UP\n";
        let rows = parse_show_stat(csv);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].proxy, "app");
        assert_eq!(rows[0].name, "web1");
        assert_eq!(rows[0].kind, StatKind::Server);
        assert_eq!(rows[0].current_sessions, 7);
        assert_eq!(rows[0].status, "UP");
    }

    #[test]
    fn a_quoted_field_may_contain_commas_and_doubled_quotes() {
        let csv = "# pxname,svname,type,check_status,addr\n\
                   be,s1,2,\"L7STS, \"\"bad\"\"\",10.0.0.1:80\n";
        let rows = parse_show_stat(csv);
        assert_eq!(rows[0].check_status.as_deref(), Some("L7STS, \"bad\""));
        assert_eq!(rows[0].address.as_deref(), Some("10.0.0.1:80"));
    }

    #[test]
    fn malformed_rows_are_skipped_and_the_rest_kept() {
        let csv = "fe,FRONTEND,,0\n\
                   # pxname,svname,type,scur\n\
                   fe,FRONTEND,0,not-a-number\n\
                   fe,FRONTEND,9,1\n\
                   ,FRONTEND,0,1\n\
                   truncated\n\
                   fe,FRONTEND,0,4\n";
        let rows = parse_show_stat(csv);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].current_sessions, 4);
    }

    #[test]
    fn rows_serialize_as_camel_case_json_with_status_classes() {
        let rows = parse_show_stat(CAPTURE);
        let json = serde_json::to_value(row(&rows, "fe", "FRONTEND")).expect("serializes");
        assert_eq!(json["kind"], "frontend");
        assert_eq!(json["currentSessions"], 0);
        assert_eq!(json["sessionLimit"], 500);
        assert_eq!(json["responses"]["2xx"], 3);
        assert_eq!(json["lastChangeSeconds"], serde_json::Value::Null);
    }

    proptest! {
        #[test]
        fn no_input_makes_the_parser_panic(text in any::<String>()) {
            parse_show_stat(&text);
        }

        #[test]
        fn no_line_under_a_real_header_makes_the_parser_panic(line in "[0-9a-zA-Z,\"# -]{0,200}") {
            let header = CAPTURE.lines().next().unwrap_or_default();
            parse_show_stat(&format!("{header}\n{line}\n"));
        }
    }
}
