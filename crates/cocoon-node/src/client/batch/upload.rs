//! `POST /v1/files`: a `multipart/form-data` upload written to disk as it arrives, every
//! line checked on the way, so a file of any size within the limit costs one line of
//! memory. A file with a bad line is refused with that line's number and nothing is kept.

use axum::body::Body;
use axum::http::{header, HeaderMap};
use tokio::io::AsyncWriteExt;

use super::jsonl::Census;
use super::store::FileRow;
use super::{new_id, now, BatchError, Batches};
use crate::limits::MAX_REQUEST_BODY;

/// Longest input line (a request body must fit one request).
const MAX_LINE: usize = MAX_REQUEST_BODY + 4096;

/// Splits a byte stream into lines for the [`Census`], keeping at most one line.
struct Lines {
    partial: Vec<u8>,
    census: Census,
    max_lines: u64,
}

impl Lines {
    fn push(&mut self, mut chunk: &[u8]) -> Result<(), BatchError> {
        while let Some(end) = memchr::memchr(b'\n', chunk) {
            let line = if self.partial.is_empty() {
                &chunk[..end]
            } else {
                self.partial.extend_from_slice(&chunk[..end]);
                &self.partial[..]
            };
            if line.len() > MAX_LINE {
                return Err(self.too_long());
            }
            let checked = self.census.add(line, self.max_lines);
            self.partial.clear();
            checked.map_err(BatchError::Invalid)?;
            chunk = &chunk[end + 1..];
        }
        self.partial.extend_from_slice(chunk);
        if self.partial.len() > MAX_LINE {
            return Err(self.too_long());
        }
        Ok(())
    }

    fn finish(mut self) -> Result<Census, BatchError> {
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            self.census
                .add(&line, self.max_lines)
                .map_err(BatchError::Invalid)?;
        }
        Ok(self.census)
    }

    fn too_long(&self) -> BatchError {
        BatchError::TooLarge(format!(
            "a line of the file is longer than {MAX_LINE} bytes (the largest request the network carries)"
        ))
    }
}

impl Batches {
    /// Reads an upload, keeps the file and returns its row.
    pub(super) async fn upload(
        &self,
        headers: &HeaderMap,
        body: Body,
    ) -> Result<FileRow, BatchError> {
        let limit = self.config.max_file_bytes;
        let announced = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if announced.is_some_and(|n| n > limit.saturating_add(64 << 10)) {
            return Err(too_large(limit));
        }
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let boundary = multer::parse_boundary(content_type).map_err(|_| {
            BatchError::Invalid(
                "upload the file as multipart/form-data with fields 'purpose' and 'file'".into(),
            )
        })?;
        let mut form = multer::Multipart::new(body.into_data_stream(), boundary);
        let id = new_id("file-");
        let path = self.file_path(&id);
        let part = path.with_extension("part");
        let mut purpose = None;
        let mut kept: Option<(String, u64, Census)> = None;
        let read = async {
            while let Some(mut field) = form.next_field().await.map_err(multipart_error)? {
                match field.name() {
                    Some("purpose") => {
                        let text = field.text().await.map_err(multipart_error)?;
                        purpose = Some(text.trim().to_owned());
                    }
                    Some("file") => {
                        if kept.is_some() {
                            return Err(BatchError::Invalid("only one 'file' per upload".into()));
                        }
                        let filename = field.file_name().unwrap_or("upload.jsonl").to_owned();
                        let mut out = tokio::fs::File::create(&part).await?;
                        let mut lines = Lines {
                            partial: Vec::new(),
                            census: Census::default(),
                            max_lines: self.config.max_lines,
                        };
                        let mut bytes = 0u64;
                        while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
                            bytes += chunk.len() as u64;
                            if bytes > limit {
                                return Err(too_large(limit));
                            }
                            lines.push(&chunk)?;
                            out.write_all(&chunk).await?;
                        }
                        out.sync_all().await?;
                        kept = Some((filename, bytes, lines.finish()?));
                    }
                    _ => {} // other fields are ignored, as OpenAI does
                }
            }
            Ok(())
        };
        let result = read.await;
        let checked = result.and_then(|()| {
            match purpose.as_deref() {
                Some("batch") => {}
                Some(other) => {
                    return Err(BatchError::Invalid(format!(
                        "purpose {other:?} is not served here; upload batch input with purpose \"batch\""
                    )))
                }
                None => return Err(BatchError::Invalid("'purpose' is required (\"batch\")".into())),
            }
            let (filename, bytes, census) = kept
                .take()
                .ok_or_else(|| BatchError::Invalid("'file' is required".into()))?;
            if census.lines == 0 {
                return Err(BatchError::Invalid("the file holds no requests".into()));
            }
            Ok(FileRow {
                id: id.clone(),
                filename,
                purpose: "batch".into(),
                bytes,
                created_at: now(),
                lines: census.lines,
                urls: census.urls,
            })
        });
        match checked {
            Ok(row) => {
                tokio::fs::rename(&part, &path).await?;
                self.store.add_file(&row)?;
                tracing::info!(file = %row.id, lines = row.lines, bytes = row.bytes, "batch input stored");
                Ok(row)
            }
            Err(e) => {
                let _ = tokio::fs::remove_file(&part).await;
                Err(e)
            }
        }
    }
}

fn too_large(limit: u64) -> BatchError {
    BatchError::TooLarge(format!(
        "the file is larger than {limit} bytes, the most this gateway accepts (batch.max_file_bytes)"
    ))
}

fn multipart_error(e: multer::Error) -> BatchError {
    BatchError::Invalid(format!("cannot read the upload: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_across_chunks_are_checked_whole() {
        let line = r#"{"custom_id":"a","method":"POST","url":"/v1/embeddings","body":{}}"#;
        let second = line.replace("\"a\"", "\"b\"");
        let text = format!("{line}\n{second}");
        let mut lines = Lines {
            partial: Vec::new(),
            census: Census::default(),
            max_lines: 10,
        };
        for chunk in text.as_bytes().chunks(7) {
            lines.push(chunk).expect("good lines");
        }
        assert_eq!(lines.finish().expect("last line").lines, 2);
        let mut lines = Lines {
            partial: Vec::new(),
            census: Census::default(),
            max_lines: 10,
        };
        let err = lines
            .push(format!("{line}\n{{oops\n").as_bytes())
            .expect_err("bad second line");
        assert!(
            err.to_string().starts_with("line 2: not valid JSON"),
            "{err}"
        );
    }
}
