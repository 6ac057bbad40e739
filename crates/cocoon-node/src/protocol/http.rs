//! Rules for the HTTP carried inside the protocol (`http.request` / `http.response`,
//! cocoon-protocol.md §3.1): which headers never cross a hop, which would identify the
//! machines behind an answer, and how a model is named for routing.

/// Headers that describe one HTTP hop and must not be forwarded.
pub fn is_hop_by_hop(name: &str) -> bool {
    const HOP: &[&str] = &[
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "content-length",
        "host",
    ];
    HOP.iter().any(|h| h.eq_ignore_ascii_case(name))
}

/// Whether a response header names the software or machines behind the answer (`Server`,
/// `X-Powered-By`, `Via`): dropped before an answer leaves the worker, and again at the
/// client gateway, so that an app learns nothing about the model server.
pub fn is_server_identifying(name: &str) -> bool {
    const IDENTIFYING: &[&str] = &["server", "x-powered-by", "via"];
    IDENTIFYING.iter().any(|h| h.eq_ignore_ascii_case(name))
}

/// The routing name of a full model id `NAME@COMMIT:HASH`: the part before `@`.
pub fn base_model_name(full: &str) -> &str {
    full.split('@').next().unwrap_or(full)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_names_route_by_their_base() {
        assert_eq!(base_model_name("Qwen/Qwen3-8B@abc:def"), "Qwen/Qwen3-8B");
        assert_eq!(base_model_name("plain"), "plain");
    }

    #[test]
    fn header_rules_ignore_case() {
        assert!(is_hop_by_hop("Transfer-Encoding") && is_hop_by_hop("host"));
        assert!(!is_hop_by_hop("content-type"));
        assert!(is_server_identifying("X-Powered-By") && is_server_identifying("Server"));
        assert!(!is_server_identifying("x-request-id"));
    }
}
