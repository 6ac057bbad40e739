//! The OpenAI endpoints requests go to, and which of them a worker serves: workers of
//! cocoon-rs announce theirs (`cocoonrs.workerEndpoints`, an extension), the proxy routes a
//! request only to workers that serve its endpoint.

/// A path that is none of the [`Endpoint`]s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unsupported method {0}")]
pub struct UnknownEndpoint(pub String);

/// The inference endpoints a worker serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/v1/chat/completions`.
    ChatCompletions,
    /// `/v1/completions`.
    Completions,
    /// `/v1/embeddings`.
    Embeddings,
    /// `/v1/audio/transcriptions` (a form).
    AudioTranscriptions,
    /// `/v1/audio/translations` (a form).
    AudioTranslations,
}

impl Endpoint {
    /// The URL path.
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "/v1/chat/completions",
            Endpoint::Completions => "/v1/completions",
            Endpoint::Embeddings => "/v1/embeddings",
            Endpoint::AudioTranscriptions => "/v1/audio/transcriptions",
            Endpoint::AudioTranslations => "/v1/audio/translations",
        }
    }

    /// The endpoint of a request URL (origin form `/v1/…`, or an absolute URL whose
    /// authority is ignored; the query is ignored too).
    pub fn of_url(url: &str) -> Result<Endpoint, UnknownEndpoint> {
        let after_scheme = url.find("://").map_or(url, |i| &url[i + 3..]);
        let path = match after_scheme.find('/') {
            Some(i) => &after_scheme[i..],
            None => after_scheme,
        };
        let path = path.split('?').next().unwrap_or(path);
        match path {
            "/v1/chat/completions" => Ok(Endpoint::ChatCompletions),
            "/v1/completions" => Ok(Endpoint::Completions),
            "/v1/embeddings" => Ok(Endpoint::Embeddings),
            "/v1/audio/transcriptions" => Ok(Endpoint::AudioTranscriptions),
            "/v1/audio/translations" => Ok(Endpoint::AudioTranslations),
            other => Err(UnknownEndpoint(other.to_owned())),
        }
    }

    /// Whether the body is a `multipart/form-data` form rather than JSON.
    pub fn takes_form(self) -> bool {
        matches!(
            self,
            Endpoint::AudioTranscriptions | Endpoint::AudioTranslations
        )
    }
}

/// A set of [`Endpoint`]s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoints(u8);

impl Endpoints {
    /// Every endpoint (a worker whose model server decides; one that has not announced).
    pub const ALL: Endpoints = Endpoints(0b11111);
    /// What COCOON 9060ce5's worker serves.
    pub const COCOON: Endpoints = Endpoints(0b01011);

    fn bit(e: Endpoint) -> u8 {
        match e {
            Endpoint::ChatCompletions => 1,
            Endpoint::Completions => 2,
            Endpoint::Embeddings => 16,
            Endpoint::AudioTranscriptions => 8,
            Endpoint::AudioTranslations => 4,
        }
    }

    /// The set of `endpoints`.
    pub fn of(endpoints: &[Endpoint]) -> Self {
        Endpoints(endpoints.iter().fold(0, |acc, e| acc | Self::bit(*e)))
    }

    /// The set a worker announced as paths; unknown paths are ignored (a newer worker).
    pub fn from_paths<S: AsRef<str>>(paths: &[S]) -> Self {
        let known: Vec<Endpoint> = paths
            .iter()
            .filter_map(|p| Endpoint::of_url(p.as_ref()).ok())
            .collect();
        Self::of(&known)
    }

    /// Both sets together.
    pub fn union(self, other: Endpoints) -> Endpoints {
        Endpoints(self.0 | other.0)
    }

    /// Whether `e` is in the set.
    pub fn contains(self, e: Endpoint) -> bool {
        self.0 & Self::bit(e) != 0
    }

    /// The paths, for announcing and for logs.
    pub fn paths(self) -> Vec<&'static str> {
        [
            Endpoint::ChatCompletions,
            Endpoint::Completions,
            Endpoint::Embeddings,
            Endpoint::AudioTranscriptions,
            Endpoint::AudioTranslations,
        ]
        .into_iter()
        .filter(|e| self.contains(*e))
        .map(Endpoint::path)
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_round_trip_through_paths() {
        let set = Endpoints::of(&[Endpoint::Embeddings, Endpoint::ChatCompletions]);
        assert_eq!(set.paths(), ["/v1/chat/completions", "/v1/embeddings"]);
        assert_eq!(Endpoints::from_paths(&set.paths()), set);
        assert_eq!(
            Endpoints::from_paths(&["/v1/images/generations"]),
            Endpoints::of(&[])
        );
        assert!(Endpoints::COCOON.contains(Endpoint::AudioTranscriptions));
        assert!(!Endpoints::COCOON.contains(Endpoint::Embeddings));
        assert!(!Endpoints::COCOON.contains(Endpoint::AudioTranslations));
        assert_eq!(
            Endpoints::from_paths(&Endpoints::ALL.paths()),
            Endpoints::ALL
        );
    }
}
