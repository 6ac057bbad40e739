//! `multipart/form-data` bodies as COCOON carries them (cocoon-protocol-9060ce5.md §3.2.3):
//! audio requests travel as their form, verbatim in `http.request.payload`, with the
//! original `Content-Type` (and boundary) in its headers.
//!
//! Parsing is `multer`'s. COCOON's rules kept: a part without a name is dropped, a later
//! part of the same name replaces the earlier one; each part keeps its header lines. The
//! form is written back as COCOON writes it: parts in lexicographic name order, each
//! `--B`, its header lines, an empty line, the value; then `--B--`. Fields a role adds
//! carry only `Content-Disposition: form-data; name="…"`.

use bytes::Bytes;

/// One field of a form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// The field name (`Content-Disposition` `name`).
    pub name: String,
    /// The part's header lines, in order (`Content-Disposition`, `Content-Type`, …).
    pub headers: Vec<(String, String)>,
    /// The field's bytes.
    pub value: Bytes,
}

impl Part {
    /// The value as text, if it is UTF-8.
    pub fn text(&self) -> Option<&str> {
        std::str::from_utf8(&self.value).ok()
    }

    /// The file name the part was uploaded with, if any.
    pub fn file_name(&self) -> Option<&str> {
        let disposition = self
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-disposition"))?;
        let rest = disposition.1.split("filename=").nth(1)?;
        Some(rest.trim_start_matches('"').split('"').next().unwrap_or(""))
    }
}

/// A parsed form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Form {
    boundary: String,
    /// The parts, one per name.
    parts: Vec<Part>,
}

/// Why a body is not a usable form.
#[derive(Debug, thiserror::Error)]
pub enum FormError {
    /// The content type is not `multipart/form-data` with a boundary.
    #[error("Content-Type must be multipart/form-data with a boundary, got {0:?}")]
    NotMultipart(String),
    /// The body does not parse.
    #[error("malformed multipart body: {0}")]
    Malformed(String),
}

impl Form {
    /// Parses `body` sent with `content_type`.
    pub async fn parse(content_type: &str, body: Bytes) -> Result<Form, FormError> {
        let lower = content_type.trim_start().to_ascii_lowercase();
        if !lower.starts_with("multipart/form-data") {
            return Err(FormError::NotMultipart(content_type.to_owned()));
        }
        let boundary = multer::parse_boundary(content_type)
            .map_err(|_| FormError::NotMultipart(content_type.to_owned()))?;
        let stream = futures::stream::once(async move { Ok::<Bytes, std::io::Error>(body) });
        let mut multipart = multer::Multipart::new(stream, boundary.clone());
        let mut form = Form {
            boundary,
            parts: Vec::new(),
        };
        loop {
            let field = match multipart.next_field().await {
                Ok(Some(field)) => field,
                Ok(None) => break,
                Err(e) => return Err(FormError::Malformed(e.to_string())),
            };
            let Some(name) = field.name().map(str::to_owned) else {
                continue; // COCOON drops unnamed parts
            };
            let headers = field
                .headers()
                .iter()
                .map(|(n, v)| {
                    (
                        header_case(n.as_str()),
                        String::from_utf8_lossy(v.as_bytes()).trim().to_owned(),
                    )
                })
                .collect();
            let value = field
                .bytes()
                .await
                .map_err(|e| FormError::Malformed(e.to_string()))?;
            form.insert(Part {
                name,
                headers,
                value,
            });
        }
        Ok(form)
    }

    /// An empty form with `boundary`.
    pub fn new(boundary: impl Into<String>) -> Self {
        Form {
            boundary: boundary.into(),
            parts: Vec::new(),
        }
    }

    /// The part called `name`.
    pub fn get(&self, name: &str) -> Option<&Part> {
        self.parts.iter().find(|p| p.name == name)
    }

    /// The text of the part called `name` (`None` if absent; `Some(Err)` if not UTF-8).
    pub fn text(&self, name: &str) -> Option<Result<&str, FormError>> {
        self.get(name).map(|p| {
            p.text()
                .ok_or_else(|| FormError::Malformed(format!("field '{name}' is not UTF-8 text")))
        })
    }

    /// Takes out the part called `name`.
    pub fn remove(&mut self, name: &str) -> Option<Part> {
        let at = self.parts.iter().position(|p| p.name == name)?;
        Some(self.parts.remove(at))
    }

    /// Adds or replaces a part.
    pub fn insert(&mut self, part: Part) {
        match self.parts.iter_mut().find(|p| p.name == part.name) {
            Some(old) => *old = part,
            None => self.parts.push(part),
        }
    }

    /// Sets a text field the way COCOON adds one (a `Content-Disposition` line only).
    pub fn set_text(&mut self, name: &str, value: &str) {
        self.insert(Part {
            name: name.to_owned(),
            headers: vec![(
                "Content-Disposition".to_owned(),
                format!("form-data; name=\"{name}\""),
            )],
            value: Bytes::copy_from_slice(value.as_bytes()),
        });
    }

    /// The parts, in the order they came.
    pub fn parts(&self) -> &[Part] {
        &self.parts
    }

    /// The `Content-Type` to send the form with (a space before `boundary=`, which
    /// COCOON's worker needs to find it).
    pub fn content_type(&self) -> String {
        format!("multipart/form-data; boundary={}", self.boundary)
    }

    /// The body, written as COCOON writes forms.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut parts: Vec<&Part> = self.parts.iter().collect();
        parts.sort_by(|a, b| a.name.cmp(&b.name));
        let size: usize = parts.iter().map(|p| p.value.len() + 200).sum();
        let mut out = Vec::with_capacity(size + 64);
        for part in parts {
            out.extend_from_slice(b"--");
            out.extend_from_slice(self.boundary.as_bytes());
            out.extend_from_slice(b"\r\n");
            for (name, value) in &part.headers {
                out.extend_from_slice(name.as_bytes());
                out.extend_from_slice(b": ");
                out.extend_from_slice(value.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(&part.value);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"--");
        out.extend_from_slice(self.boundary.as_bytes());
        out.extend_from_slice(b"--\r\n");
        out
    }
}

/// `content-disposition` → `Content-Disposition`.
fn header_case(name: &str) -> String {
    name.split('-')
        .map(|word| {
            let mut chars = word.chars();
            match chars.next() {
                Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const CT: &str = "multipart/form-data; boundary=XyZ";

    fn body() -> Bytes {
        Bytes::from_static(
            b"--XyZ\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper\r\n\
--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\nContent-Type: audio/wav\r\n\r\nRIFF\x00\x01\r\n\
--XyZ\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nlater\r\n\
--XyZ\r\nContent-Type: text/plain\r\n\r\nunnamed\r\n\
--XyZ--\r\n",
        )
    }

    #[tokio::test]
    async fn parts_parse_with_cocoons_rules() {
        let form = Form::parse(CT, body()).await.expect("form");
        assert_eq!(form.parts().len(), 2, "unnamed dropped, same name replaced");
        assert_eq!(form.text("model").expect("model").expect("utf-8"), "later");
        let file = form.get("file").expect("file");
        assert_eq!(&file.value[..], b"RIFF\x00\x01");
        assert_eq!(file.file_name(), Some("a.wav"));
        assert!(file
            .headers
            .contains(&("Content-Type".to_owned(), "audio/wav".to_owned())));
    }

    #[tokio::test]
    async fn forms_are_written_as_cocoon_writes_them() {
        let mut form = Form::parse(CT, body()).await.expect("form");
        form.set_text("max_tokens", "10000");
        let written = form.to_bytes();
        let expected = b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\nContent-Type: audio/wav\r\n\r\nRIFF\x00\x01\r\n\
--XyZ\r\nContent-Disposition: form-data; name=\"max_tokens\"\r\n\r\n10000\r\n\
--XyZ\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nlater\r\n\
--XyZ--\r\n";
        assert_eq!(
            String::from_utf8_lossy(&written),
            String::from_utf8_lossy(expected)
        );
        assert_eq!(form.content_type(), CT);
        let again = Form::parse(&form.content_type(), Bytes::from(written.clone()))
            .await
            .expect("reparse");
        assert_eq!(
            again.to_bytes(),
            written,
            "a written form reads back the same"
        );
    }

    #[tokio::test]
    async fn non_forms_are_refused() {
        assert!(matches!(
            Form::parse("application/json", body()).await,
            Err(FormError::NotMultipart(_))
        ));
        assert!(matches!(
            Form::parse("multipart/form-data", body()).await,
            Err(FormError::NotMultipart(_))
        ));
        assert!(matches!(
            Form::parse(
                CT,
                Bytes::from_static(
                    b"--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nno end"
                )
            )
            .await,
            Err(FormError::Malformed(_))
        ));
    }

    proptest! {
        #[test]
        fn written_forms_parse_back(
            fields in proptest::collection::btree_map("[a-z_]{1,12}", proptest::collection::vec(any::<u8>(), 0..300), 0..6),
        ) {
            let mut form = Form::new("b0und4ry-x");
            for (name, value) in &fields {
                form.insert(Part {
                    name: name.clone(),
                    headers: vec![("Content-Disposition".into(), format!("form-data; name=\"{name}\""))],
                    value: Bytes::from(value.clone()),
                });
            }
            let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
            let again = rt
                .block_on(Form::parse(&form.content_type(), Bytes::from(form.to_bytes())))
                .expect("parse");
            let mut sorted = form.clone();
            sorted.parts.sort_by(|a, b| a.name.cmp(&b.name));
            prop_assert_eq!(again, sorted);
        }

        #[test]
        fn any_bytes_parse_or_fail_without_panicking(body in proptest::collection::vec(any::<u8>(), 0..600)) {
            let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
            let _ = rt.block_on(Form::parse(CT, Bytes::from(body)));
        }
    }
}
