//! The OpenAI endpoints requests go to, and which of them a worker serves: workers of
//! cocoon-rs announce theirs (`cocoonrs.workerEndpoints`, an extension), the proxy routes a
//! request only to workers that serve its endpoint.
//!
//! The announcement is a list of strings: each endpoint's path, and the name of each
//! [`Feature`] the worker offers on them (`"tools"`). Strings a peer does not know are
//! ignored, so that a newer worker can say more to an older proxy.

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

/// What some model servers can do on an endpoint and others cannot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feature {
    /// `tools` in `/v1/chat/completions`: the model may answer with `tool_calls`.
    /// COCOON 9060ce5's worker refuses `tools`.
    Tools,
}

impl Feature {
    /// Its name in the announcement.
    pub fn name(self) -> &'static str {
        match self {
            Feature::Tools => "tools",
        }
    }

    fn of_name(name: &str) -> Option<Feature> {
        match name {
            "tools" => Some(Feature::Tools),
            _ => None,
        }
    }

    fn bit(self) -> u8 {
        match self {
            Feature::Tools => 32,
        }
    }
}

/// A set of [`Endpoint`]s, with the [`Feature`]s offered on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoints(u8);

impl Endpoints {
    /// Every endpoint and feature (a model server that answers for itself, such as vLLM;
    /// a cocoon-rs worker before its announcement arrives).
    pub const ALL: Endpoints = Endpoints(0b111111);
    /// What COCOON 9060ce5's worker serves (no tools).
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

    /// The set with `feature` added.
    pub fn with(self, feature: Feature) -> Endpoints {
        Endpoints(self.0 | feature.bit())
    }

    /// Whether `feature` is offered.
    pub fn offers(self, feature: Feature) -> bool {
        self.0 & feature.bit() != 0
    }

    /// The set a worker announced (paths and feature names); strings not known here are
    /// ignored (a newer worker).
    pub fn from_announcement<S: AsRef<str>>(entries: &[S]) -> Self {
        entries.iter().fold(Self::of(&[]), |set, e| {
            let e = e.as_ref();
            match (Endpoint::of_url(e), Feature::of_name(e)) {
                (Ok(endpoint), _) => set.union(Self::of(&[endpoint])),
                (_, Some(feature)) => set.with(feature),
                _ => set,
            }
        })
    }

    /// The names of the features offered.
    pub fn features(self) -> Vec<&'static str> {
        [Feature::Tools]
            .into_iter()
            .filter(|f| self.offers(*f))
            .map(Feature::name)
            .collect()
    }

    /// What a worker announces: the paths, then the feature names.
    pub fn announcement(self) -> Vec<&'static str> {
        let mut out = self.paths();
        out.extend(self.features());
        out
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
        assert_eq!(Endpoints::from_announcement(&set.paths()), set);
        assert_eq!(
            Endpoints::from_announcement(&["/v1/images/generations", "vision"]),
            Endpoints::of(&[])
        );
        assert!(Endpoints::COCOON.contains(Endpoint::AudioTranscriptions));
        assert!(!Endpoints::COCOON.contains(Endpoint::Embeddings));
        assert!(!Endpoints::COCOON.contains(Endpoint::AudioTranslations));
        assert_eq!(
            Endpoints::from_announcement(&Endpoints::ALL.announcement()),
            Endpoints::ALL
        );
    }

    #[test]
    fn features_travel_beside_the_paths() {
        let chat = Endpoints::of(&[Endpoint::ChatCompletions]);
        assert!(!chat.offers(Feature::Tools));
        let tools = chat.with(Feature::Tools);
        assert_eq!(tools.announcement(), ["/v1/chat/completions", "tools"]);
        assert_eq!(tools.paths(), ["/v1/chat/completions"]);
        assert_eq!(Endpoints::from_announcement(&tools.announcement()), tools);
        assert!(Endpoints::ALL.offers(Feature::Tools));
        assert!(!Endpoints::COCOON.offers(Feature::Tools));
    }
}
