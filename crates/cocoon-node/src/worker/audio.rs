//! Audio answers the worker renders itself: `text`, `srt` and `vtt` transcripts written
//! from the model server's `verbose_json` (its text, and segments with their times), so
//! that the usage in the JSON is metered before the app gets plain text.

use serde_json::Value;

/// A transcript format the worker renders from `verbose_json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioFormat {
    /// The text alone.
    Text,
    /// SubRip subtitles.
    Srt,
    /// WebVTT subtitles.
    Vtt,
}

impl AudioFormat {
    /// The answer's `Content-Type`.
    pub fn content_type(self) -> &'static str {
        match self {
            AudioFormat::Text | AudioFormat::Srt => "text/plain; charset=utf-8",
            AudioFormat::Vtt => "text/vtt; charset=utf-8",
        }
    }
}

/// The transcript of a `verbose_json` answer in `format`. Without segments the whole text
/// is one cue over the audio's `duration`.
pub fn render(format: AudioFormat, verbose: &Value) -> Vec<u8> {
    let text = verbose["text"].as_str().unwrap_or("").trim();
    if format == AudioFormat::Text {
        return format!("{text}\n").into_bytes();
    }
    let mut cues: Vec<(f64, f64, String)> = verbose["segments"]
        .as_array()
        .map(|segments| {
            segments
                .iter()
                .map(|s| {
                    (
                        s["start"].as_f64().unwrap_or(0.0),
                        s["end"].as_f64().unwrap_or(0.0),
                        s["text"].as_str().unwrap_or("").trim().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    if cues.is_empty() && !text.is_empty() {
        let end = verbose["duration"].as_f64().unwrap_or(0.0);
        cues.push((0.0, end, text.to_owned()));
    }
    let mut out = String::new();
    if format == AudioFormat::Vtt {
        out.push_str("WEBVTT\n\n");
    }
    for (i, (start, end, line)) in cues.iter().enumerate() {
        if format == AudioFormat::Srt {
            out.push_str(&format!("{}\n", i + 1));
        }
        out.push_str(&format!(
            "{} --> {}\n{line}\n\n",
            timestamp(*start, format),
            timestamp(*end, format)
        ));
    }
    out.into_bytes()
}

/// `HH:MM:SS,mmm` (SRT) or `HH:MM:SS.mmm` (VTT).
fn timestamp(seconds: f64, format: AudioFormat) -> String {
    let ms = if seconds.is_finite() && seconds > 0.0 {
        (seconds * 1000.0).round() as u64
    } else {
        0
    };
    let sep = if format == AudioFormat::Srt { ',' } else { '.' };
    format!(
        "{:02}:{:02}:{:02}{sep}{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn verbose() -> Value {
        json!({"task": "transcribe", "language": "english", "duration": 3.5, "text": " Hello there. General Kenobi.",
               "segments": [{"id": 0, "start": 0.0, "end": 1.25, "text": " Hello there."},
                            {"id": 1, "start": 1.25, "end": 3661.5, "text": " General Kenobi."}]})
    }

    #[test]
    fn transcripts_render_in_each_format() {
        assert_eq!(
            String::from_utf8(render(AudioFormat::Text, &verbose())).expect("utf-8"),
            "Hello there. General Kenobi.\n"
        );
        assert_eq!(
            String::from_utf8(render(AudioFormat::Srt, &verbose())).expect("utf-8"),
            "1\n00:00:00,000 --> 00:00:01,250\nHello there.\n\n2\n00:00:01,250 --> 01:01:01,500\nGeneral Kenobi.\n\n"
        );
        assert_eq!(
            String::from_utf8(render(AudioFormat::Vtt, &verbose())).expect("utf-8"),
            "WEBVTT\n\n00:00:00.000 --> 00:00:01.250\nHello there.\n\n00:00:01.250 --> 01:01:01.500\nGeneral Kenobi.\n\n"
        );
    }

    #[test]
    fn without_segments_the_text_is_one_cue() {
        let v = json!({"text": "hi", "duration": 2.0});
        assert_eq!(
            String::from_utf8(render(AudioFormat::Srt, &v)).expect("utf-8"),
            "1\n00:00:00,000 --> 00:00:02,000\nhi\n\n"
        );
        assert_eq!(render(AudioFormat::Vtt, &json!({})), b"WEBVTT\n\n");
    }
}
