//! `/metrics` in the Prometheus text format (0.0.4), for clients that do
//! not ask for OpenMetrics (curl, `promtool check metrics`, older
//! scrapers). prometheus-client writes only OpenMetrics; the two differ,
//! for what we emit, in four things handled here: a counter family is named
//! without `_total` in OpenMetrics and with it in the text format; `# UNIT`
//! and `# EOF` do not exist in the text format; and HELP escapes only `\\`
//! and `\n` there (OpenMetrics also `\"`). Samples are the same.
//!
//! Hand-written: no crate converts between the two, and the rules above
//! are all there is for the metric types we emit (counter, gauge,
//! histogram; no exemplars, no `_created`).

/// The content type of [`to_text`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Does an `Accept` header ask for OpenMetrics?
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| a.contains("application/openmetrics-text"))
}

/// Converts prometheus-client's OpenMetrics text to the text format.
pub fn to_text(om: &str) -> String {
    let counters: std::collections::HashSet<&str> = om
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|r| r.strip_suffix(" counter"))
        .collect();
    let rename = |name: &str| -> String {
        if counters.contains(name) && !name.ends_with("_total") {
            format!("{name}_total")
        } else {
            name.to_string()
        }
    };
    let mut out = String::with_capacity(om.len());
    for line in om.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            out.push_str("# HELP ");
            out.push_str(&rename(name));
            out.push(' ');
            out.push_str(&help.replace("\\\"", "\""));
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, ty) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            out.push_str("# TYPE ");
            out.push_str(&rename(name));
            out.push(' ');
            out.push_str(if ty == "unknown" { "untyped" } else { ty });
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_get_their_total_name_and_openmetrics_only_lines_go() {
        let om = "# HELP a_seconds How long.\n# TYPE a_seconds histogram\n# UNIT a_seconds seconds\n\
                  a_seconds_sum 1\n# HELP c Say \\\"x\\\" \\\\ \\n.\n# TYPE c counter\nc_total{k=\"v\"} 3\n\
                  # HELP g_total A gauge.\n# TYPE g_total gauge\ng_total 1\n# EOF\n";
        assert_eq!(
            to_text(om),
            "# HELP a_seconds How long.\n# TYPE a_seconds histogram\na_seconds_sum 1\n\
             # HELP c_total Say \"x\" \\\\ \\n.\n# TYPE c_total counter\nc_total{k=\"v\"} 3\n\
             # HELP g_total A gauge.\n# TYPE g_total gauge\ng_total 1\n"
        );
    }

    #[test]
    fn accept_header() {
        assert!(wants_openmetrics(Some(
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
        )));
        assert!(!wants_openmetrics(Some("*/*")));
        assert!(!wants_openmetrics(None));
    }
}
