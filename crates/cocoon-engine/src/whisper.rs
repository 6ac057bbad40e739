//! Speech to text with OpenAI's Whisper (candle's model): log-mel spectrograms, language
//! detection, and greedy (or sampled) decoding of each 30-second window, with or without
//! segment timestamps.

use candle_core::{DType, Device, IndexOp, Tensor};
use std::sync::Arc;

use candle_transformers::models::whisper::{self as w, model, quantized_model};
use rand::Rng;
use tokenizers::Tokenizer;

use crate::error::{EngineError, Result};
use crate::mel;
use crate::whisper_decoder::{Source, TextDecoder};

/// Whisper's languages: token code and the name OpenAI's API answers with.
const LANGUAGES: [(&str, &str); 99] = [
    ("en", "english"),
    ("zh", "chinese"),
    ("de", "german"),
    ("es", "spanish"),
    ("ru", "russian"),
    ("ko", "korean"),
    ("fr", "french"),
    ("ja", "japanese"),
    ("pt", "portuguese"),
    ("tr", "turkish"),
    ("pl", "polish"),
    ("ca", "catalan"),
    ("nl", "dutch"),
    ("ar", "arabic"),
    ("sv", "swedish"),
    ("it", "italian"),
    ("id", "indonesian"),
    ("hi", "hindi"),
    ("fi", "finnish"),
    ("vi", "vietnamese"),
    ("he", "hebrew"),
    ("uk", "ukrainian"),
    ("el", "greek"),
    ("ms", "malay"),
    ("cs", "czech"),
    ("ro", "romanian"),
    ("da", "danish"),
    ("hu", "hungarian"),
    ("ta", "tamil"),
    ("no", "norwegian"),
    ("th", "thai"),
    ("ur", "urdu"),
    ("hr", "croatian"),
    ("bg", "bulgarian"),
    ("lt", "lithuanian"),
    ("la", "latin"),
    ("mi", "maori"),
    ("ml", "malayalam"),
    ("cy", "welsh"),
    ("sk", "slovak"),
    ("te", "telugu"),
    ("fa", "persian"),
    ("lv", "latvian"),
    ("bn", "bengali"),
    ("sr", "serbian"),
    ("az", "azerbaijani"),
    ("sl", "slovenian"),
    ("kn", "kannada"),
    ("et", "estonian"),
    ("mk", "macedonian"),
    ("br", "breton"),
    ("eu", "basque"),
    ("is", "icelandic"),
    ("hy", "armenian"),
    ("ne", "nepali"),
    ("mn", "mongolian"),
    ("bs", "bosnian"),
    ("kk", "kazakh"),
    ("sq", "albanian"),
    ("sw", "swahili"),
    ("gl", "galician"),
    ("mr", "marathi"),
    ("pa", "punjabi"),
    ("si", "sinhala"),
    ("km", "khmer"),
    ("sn", "shona"),
    ("yo", "yoruba"),
    ("so", "somali"),
    ("af", "afrikaans"),
    ("oc", "occitan"),
    ("ka", "georgian"),
    ("be", "belarusian"),
    ("tg", "tajik"),
    ("sd", "sindhi"),
    ("gu", "gujarati"),
    ("am", "amharic"),
    ("yi", "yiddish"),
    ("lo", "lao"),
    ("uz", "uzbek"),
    ("fo", "faroese"),
    ("ht", "haitian creole"),
    ("ps", "pashto"),
    ("tk", "turkmen"),
    ("nn", "nynorsk"),
    ("mt", "maltese"),
    ("sa", "sanskrit"),
    ("lb", "luxembourgish"),
    ("my", "myanmar"),
    ("bo", "tibetan"),
    ("tl", "tagalog"),
    ("mg", "malagasy"),
    ("as", "assamese"),
    ("tt", "tatar"),
    ("haw", "hawaiian"),
    ("ln", "lingala"),
    ("ha", "hausa"),
    ("ba", "bashkir"),
    ("jw", "javanese"),
    ("su", "sundanese"),
];

/// Seconds per timestamp token step.
const TIME_STEP: f64 = 0.02;

/// What to do with the speech.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Task {
    /// Text in the spoken language.
    Transcribe,
    /// English text.
    Translate,
}

/// How to decode.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub(crate) task: Task,
    /// A language code (`en`) or name (`english`); `None` detects it.
    pub(crate) language: Option<String>,
    /// Text that conditions the decoding (names, spelling, style).
    pub(crate) prompt: Option<String>,
    /// 0: greedy.
    pub(crate) temperature: f64,
    /// Segment times from Whisper's timestamp tokens.
    pub(crate) timestamps: bool,
    /// The most tokens to generate over the whole audio (`max_tokens` in the form, which
    /// COCOON's client adds as the request's budget).
    pub(crate) max_tokens: Option<usize>,
}

/// One piece of the transcript.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Segment {
    pub(crate) start: f64,
    pub(crate) end: f64,
    pub(crate) text: String,
    pub(crate) tokens: Vec<u32>,
    pub(crate) avg_logprob: f64,
}

/// A whole transcript.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Transcript {
    /// The language's name (`english`).
    pub(crate) language: String,
    /// Seconds of audio.
    pub(crate) duration: f64,
    pub(crate) text: String,
    pub(crate) segments: Vec<Segment>,
    /// Tokens generated.
    pub(crate) output_tokens: usize,
}

/// The special tokens decoding needs.
#[derive(Debug, Clone)]
struct Specials {
    sot: u32,
    eot: u32,
    transcribe: u32,
    translate: u32,
    no_timestamps: u32,
    start_of_prev: Option<u32>,
    timestamp_begin: Option<u32>,
    /// (token, code, name) of the languages the tokenizer knows.
    languages: Vec<(u32, &'static str, &'static str)>,
}

/// What a Whisper model computes on the way to its first token, for numerical checks
/// ([`Engine::speech_probe`](crate::Engine::speech_probe)).
#[derive(Debug, Clone)]
pub struct SpeechProbe {
    /// The log-mel spectrogram: `num_mel_bins` rows of 3000 frames (30 s, zero-padded).
    pub mel: Vec<Vec<f32>>,
    /// The encoder's output: one row per audio position (1500), `d_model` wide.
    pub encoder: Vec<Vec<f32>>,
    /// The decoder's next-token logits after each of the tokens it was fed.
    pub logits: Vec<Vec<f32>>,
}

/// Whisper's audio encoder: candle's, full precision (safetensors) or quantized (GGUF).
#[derive(Clone)]
pub(crate) enum Encoder {
    /// From safetensors.
    Full(model::AudioEncoder),
    /// From GGUF.
    Quantized(quantized_model::AudioEncoder),
}

/// Whisper's weights: candle's encoder and our cached decoder.
#[derive(Clone)]
pub(crate) struct WhisperWeights {
    encoder: Encoder,
    decoder: Arc<TextDecoder>,
    config: w::Config,
}

impl WhisperWeights {
    /// From safetensors (`vb` at the checkpoint's root).
    pub(crate) fn full(vb: &candle_nn::VarBuilder, config: w::Config) -> Result<Self> {
        let decoder = TextDecoder::load(Source::Full(vb.clone()), &config, vb.device())?;
        // candle's loader also builds its own decoder; only the encoder is kept.
        let model::Whisper { encoder, .. } = model::Whisper::load(vb, config.clone())?;
        Ok(WhisperWeights {
            encoder: Encoder::Full(encoder),
            decoder: Arc::new(decoder),
            config,
        })
    }

    /// From a GGUF.
    pub(crate) fn quantized(
        vb: &candle_transformers::quantized_var_builder::VarBuilder,
        config: w::Config,
        device: &Device,
    ) -> Result<Self> {
        let decoder = TextDecoder::load(Source::Quantized(vb.clone()), &config, device)?;
        let quantized_model::Whisper { encoder, .. } =
            quantized_model::Whisper::load(vb, config.clone())?;
        Ok(WhisperWeights {
            encoder: Encoder::Quantized(encoder),
            decoder: Arc::new(decoder),
            config,
        })
    }

    fn config(&self) -> &w::Config {
        &self.config
    }

    fn encode(&self, mel: &Tensor) -> candle_core::Result<Tensor> {
        match self.encoder.clone() {
            Encoder::Full(mut e) => e.forward(mel, true),
            Encoder::Quantized(mut e) => e.forward(mel, true),
        }
    }
}

/// A loaded Whisper model with its tokenizer and mel filters.
#[derive(Clone)]
pub(crate) struct SpeechModel {
    model: WhisperWeights,
    tokenizer: Tokenizer,
    filters: Vec<f32>,
    specials: Specials,
    device: Device,
}

impl std::fmt::Debug for SpeechModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpeechModel").finish_non_exhaustive()
    }
}

fn id(tokenizer: &Tokenizer, token: &str) -> Result<u32> {
    tokenizer
        .token_to_id(token)
        .ok_or_else(|| EngineError::InvalidModel(format!("the tokenizer lacks {token}")))
}

impl SpeechModel {
    /// A model from its weights (`config` as in its `config.json`) and tokenizer.
    pub(crate) fn new(model: WhisperWeights, tokenizer: Tokenizer, device: Device) -> Result<Self> {
        let languages = LANGUAGES
            .iter()
            .filter_map(|(code, name)| {
                tokenizer
                    .token_to_id(&format!("<|{code}|>"))
                    .map(|t| (t, *code, *name))
            })
            .collect();
        let specials = Specials {
            sot: id(&tokenizer, w::SOT_TOKEN)?,
            eot: id(&tokenizer, w::EOT_TOKEN)?,
            transcribe: id(&tokenizer, w::TRANSCRIBE_TOKEN)?,
            translate: id(&tokenizer, w::TRANSLATE_TOKEN)?,
            no_timestamps: id(&tokenizer, w::NO_TIMESTAMPS_TOKEN)?,
            start_of_prev: tokenizer.token_to_id("<|startofprev|>"),
            timestamp_begin: tokenizer.token_to_id("<|0.00|>"),
            languages,
        };
        let filters = mel::filters(model.config().num_mel_bins);
        Ok(SpeechModel {
            model,
            tokenizer,
            filters,
            specials,
            device,
        })
    }

    /// The code of `language` (a code or a name), if the model knows it.
    fn language_token(&self, language: &str) -> Option<u32> {
        let l = language.trim().to_ascii_lowercase();
        self.specials
            .languages
            .iter()
            .find(|(_, code, name)| *code == l || *name == l)
            .map(|(t, _, _)| *t)
    }

    /// The mel spectrogram, encoder output and decoder logits of the first 30 s window of
    /// `samples` with the decoder fed `tokens`: for numerical checks against other
    /// implementations.
    pub(crate) fn probe(&self, samples: &[f32], tokens: &[u32]) -> Result<SpeechProbe> {
        let model = &self.model;
        let mut pcm = samples[..samples.len().min(w::N_SAMPLES)].to_vec();
        pcm.resize(w::N_SAMPLES, 0.0);
        let n_mels = model.config().num_mel_bins;
        let mel = mel::log_mel(&pcm, &self.filters);
        let all_frames = mel.len() / n_mels;
        let mel = Tensor::from_vec(mel, (1, n_mels, all_frames), &self.device)?.narrow(
            2,
            0,
            all_frames.min(w::N_FRAMES),
        )?;
        let features = model.encode(&mel)?;
        let mut cache = model.decoder.cache(&features)?;
        let hidden = model.decoder.forward(tokens, &mut cache)?;
        let logits = model.decoder.logits(&hidden)?;
        Ok(SpeechProbe {
            mel: mel.i(0)?.to_dtype(DType::F32)?.to_vec2()?,
            encoder: features.i(0)?.to_dtype(DType::F32)?.to_vec2()?,
            logits: logits.to_vec2()?,
        })
    }

    /// Transcribes (or translates) 16 kHz mono `samples`, window by window.
    pub(crate) fn transcribe(&self, samples: &[f32], opts: &Options) -> Result<Transcript> {
        let model = &self.model;
        let duration = samples.len() as f64 / w::SAMPLE_RATE as f64;
        let language = match &opts.language {
            Some(l) => Some(
                self.language_token(l)
                    .ok_or_else(|| EngineError::InvalidModel(format!("unknown language {l:?}")))?,
            ),
            None => None,
        };
        let prompt: Vec<u32> = match (&opts.prompt, self.specials.start_of_prev) {
            (Some(p), Some(prev)) if !p.trim().is_empty() => {
                let ids = self
                    .tokenizer
                    .encode(format!(" {}", p.trim()), false)
                    .map_err(|e| EngineError::Tokenizer(e.to_string()))?
                    .get_ids()
                    .to_vec();
                let keep = model.config().max_target_positions / 2 - 1;
                let start = ids.len().saturating_sub(keep);
                std::iter::once(prev)
                    .chain(ids[start..].iter().copied())
                    .collect()
            }
            _ => Vec::new(),
        };
        let mut rng = rand::thread_rng();
        let mut segments = Vec::new();
        let mut detected = None;
        let mut output_tokens = 0;
        let windows = samples.len().div_ceil(w::N_SAMPLES).max(1);
        for win in 0..windows {
            let start = win * w::N_SAMPLES;
            let end = (start + w::N_SAMPLES).min(samples.len());
            let mut pcm = samples.get(start..end).unwrap_or(&[]).to_vec();
            let window_seconds = pcm.len() as f64 / w::SAMPLE_RATE as f64;
            pcm.resize(w::N_SAMPLES, 0.0);
            let mel = mel::log_mel(&pcm, &self.filters);
            let n_mels = model.config().num_mel_bins;
            let frames = mel.len() / n_mels;
            let mel = Tensor::from_vec(mel, (1, n_mels, frames), &self.device)?.narrow(
                2,
                0,
                frames.min(w::N_FRAMES),
            )?;
            let features = model.encode(&mel)?;
            let lang = match (language, detected) {
                (Some(l), _) | (None, Some(l)) => l,
                (None, None) => {
                    let l = self.detect_language(model, &features)?;
                    detected = Some(l);
                    l
                }
            };
            let task = match opts.task {
                Task::Transcribe => self.specials.transcribe,
                Task::Translate => self.specials.translate,
            };
            let mut tokens = prompt.clone();
            tokens.extend([self.specials.sot, lang, task]);
            let timestamps = opts.timestamps && self.specials.timestamp_begin.is_some();
            if !timestamps {
                tokens.push(self.specials.no_timestamps);
            }
            let first = tokens.len();
            let mut logprob_sum = 0.0;
            let max_len = model.config().max_target_positions;
            let budget = opts
                .max_tokens
                .map_or(usize::MAX, |m| m.saturating_sub(output_tokens));
            // The prefix once, then one token a step through the cache.
            let steps = (max_len / 2).min(budget);
            let mut cache = model.decoder.cache(&features)?;
            let mut logits = if steps > 0 {
                model.decoder.step(&tokens, &mut cache)?
            } else {
                Vec::new()
            };
            let suppressed = &model.config().suppress_tokens;
            for step in 0..steps {
                self.suppress(&mut logits, suppressed, timestamps);
                let next = pick(&logits, opts.temperature, &mut rng);
                logprob_sum += log_softmax_at(&logits, next);
                if next == self.specials.eot || tokens.len() + 1 >= max_len {
                    break;
                }
                tokens.push(next);
                if step + 1 < steps {
                    logits = model.decoder.step(&[next], &mut cache)?;
                }
            }
            let generated = &tokens[first..];
            output_tokens += generated.len();
            let offset = start as f64 / w::SAMPLE_RATE as f64;
            let avg = logprob_sum / (generated.len().max(1) as f64);
            segments.extend(self.segments(generated, offset, window_seconds, avg)?);
        }
        let text = segments
            .iter()
            .map(|s| s.text.as_str())
            .collect::<Vec<_>>()
            .join(" ");
        let lang_token = language.or(detected);
        let language = self
            .specials
            .languages
            .iter()
            .find(|(t, _, _)| Some(*t) == lang_token)
            .map_or("english", |(_, _, name)| name)
            .to_owned();
        Ok(Transcript {
            language,
            duration,
            text: text.trim().to_owned(),
            segments,
            output_tokens,
        })
    }

    /// The language token most likely after `<|startoftranscript|>`.
    fn detect_language(&self, model: &WhisperWeights, features: &Tensor) -> Result<u32> {
        let (first, _, _) =
            self.specials.languages.first().copied().ok_or_else(|| {
                EngineError::InvalidModel("the tokenizer knows no language".into())
            })?;
        let mut cache = model.decoder.cache(features)?;
        let logits = model.decoder.step(&[self.specials.sot], &mut cache)?;
        Ok(self
            .specials
            .languages
            .iter()
            .max_by(|a, b| {
                // A tokenizer larger than the model's vocabulary scores its extra tokens lowest.
                let score = |t: u32| logits.get(t as usize).copied().unwrap_or(f32::NEG_INFINITY);
                score(a.0)
                    .partial_cmp(&score(b.0))
                    .unwrap_or(std::cmp::Ordering::Equal)
            })
            .map_or(first, |(t, _, _)| *t))
    }

    /// Masks what may not come next: the model's `suppress_tokens`, the task and
    /// language tokens, and timestamps when they are off.
    fn suppress(&self, logits: &mut [f32], suppress: &[u32], timestamps: bool) {
        let s = &self.specials;
        let mut masked: Vec<u32> = suppress.to_vec();
        masked.extend([s.sot, s.transcribe, s.translate, s.no_timestamps]);
        masked.extend(s.start_of_prev);
        masked.extend(s.languages.iter().map(|(t, _, _)| *t));
        for t in masked {
            if let Some(l) = logits.get_mut(t as usize) {
                *l = f32::NEG_INFINITY;
            }
        }
        if let (false, Some(begin)) = (timestamps, s.timestamp_begin) {
            for l in logits.iter_mut().skip(begin as usize) {
                *l = f32::NEG_INFINITY;
            }
        }
    }

    /// The segments of one window's tokens: cut at timestamp pairs when there are any,
    /// else the whole window is one segment.
    fn segments(
        &self,
        tokens: &[u32],
        offset: f64,
        window: f64,
        avg_logprob: f64,
    ) -> Result<Vec<Segment>> {
        let decode = |ids: &[u32]| -> Result<String> {
            Ok(self
                .tokenizer
                .decode(ids, true)
                .map_err(|e| EngineError::Tokenizer(e.to_string()))?
                .trim()
                .to_owned())
        };
        let begin = self.specials.timestamp_begin;
        let time = |t: u32| begin.map(|b| offset + (t - b) as f64 * TIME_STEP);
        let is_time = |t: u32| begin.is_some_and(|b| t >= b);
        let mut out = Vec::new();
        let mut start: Option<f64> = None;
        let mut text: Vec<u32> = Vec::new();
        for &t in tokens {
            if is_time(t) {
                match start {
                    None => start = time(t),
                    Some(s) => {
                        if !text.is_empty() {
                            out.push(Segment {
                                start: s,
                                end: time(t).unwrap_or(s).max(s),
                                text: decode(&text)?,
                                tokens: std::mem::take(&mut text),
                                avg_logprob,
                            });
                        }
                        start = None;
                    }
                }
            } else {
                text.push(t);
            }
        }
        if !text.is_empty() {
            out.push(Segment {
                start: start.unwrap_or(offset),
                end: offset + window,
                text: decode(&text)?,
                tokens: text,
                avg_logprob,
            });
        }
        Ok(out.into_iter().filter(|s| !s.text.is_empty()).collect())
    }
}

/// Greedy at temperature 0, else a sample from the softmax at `temperature`.
fn pick(logits: &[f32], temperature: f64, rng: &mut impl Rng) -> u32 {
    let best = logits
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.partial_cmp(b.1).unwrap_or(std::cmp::Ordering::Equal))
        .map_or(0, |(i, _)| i as u32);
    if temperature <= 0.0 {
        return best;
    }
    let max = logits[best as usize];
    let weights: Vec<f64> = logits
        .iter()
        .map(|l| (((*l - max) as f64) / temperature).exp())
        .collect();
    let total: f64 = weights.iter().sum();
    if !(total.is_finite() && total > 0.0) {
        return best;
    }
    let mut x = rng.gen::<f64>() * total;
    for (i, w) in weights.iter().enumerate() {
        x -= w;
        if x <= 0.0 {
            return i as u32;
        }
    }
    best
}

fn log_softmax_at(logits: &[f32], i: u32) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = logits
        .iter()
        .map(|l| ((*l as f64) - max).exp())
        .sum::<f64>()
        .ln();
    logits
        .get(i as usize)
        .map_or(f64::NEG_INFINITY, |l| *l as f64 - max - sum)
}

/// What an audio form asks for.
#[derive(Debug, Clone)]
pub(crate) struct AudioForm {
    pub(crate) file: Vec<u8>,
    /// The uploaded file name's extension (a hint for the decoder).
    pub(crate) extension: Option<String>,
    pub(crate) model: Option<String>,
    pub(crate) language: Option<String>,
    pub(crate) prompt: Option<String>,
    pub(crate) response_format: Option<String>,
    pub(crate) temperature: f64,
    pub(crate) max_tokens: Option<usize>,
}

/// Reads an audio request's `multipart/form-data` form.
pub(crate) async fn read_form(
    content_type: &str,
    body: &[u8],
) -> std::result::Result<AudioForm, crate::error::ApiError> {
    use crate::error::ApiError;
    let boundary = multer::parse_boundary(content_type).map_err(|_| {
        ApiError::bad_request(format!(
            "an audio request is a multipart/form-data form with a boundary; got Content-Type {content_type:?}"
        ))
    })?;
    let body = bytes::Bytes::copy_from_slice(body);
    let stream = futures::stream::once(async move { Ok::<_, std::io::Error>(body) });
    let mut multipart = multer::Multipart::new(stream, boundary);
    let mut form = AudioForm {
        file: Vec::new(),
        extension: None,
        model: None,
        language: None,
        prompt: None,
        response_format: None,
        temperature: 0.0,
        max_tokens: None,
    };
    let bad = |e: multer::Error| ApiError::bad_request(format!("malformed form: {e}"));
    while let Some(field) = multipart.next_field().await.map_err(bad)? {
        let name = field.name().unwrap_or_default().to_owned();
        if name == "file" {
            form.extension = field
                .file_name()
                .and_then(|n| n.rsplit_once('.'))
                .map(|(_, ext)| ext.to_ascii_lowercase());
            form.file = field.bytes().await.map_err(bad)?.to_vec();
            continue;
        }
        let text = field.text().await.map_err(bad)?;
        let text = text.trim().to_owned();
        match name.as_str() {
            "model" => form.model = Some(text),
            "language" if !text.is_empty() => form.language = Some(text),
            "prompt" => form.prompt = Some(text),
            "response_format" => form.response_format = Some(text),
            "max_tokens" | "max_completion_tokens" if !text.is_empty() => {
                let n = text.parse::<usize>().map_err(|_| {
                    ApiError::bad_param(&name, format!("`{name}` must be a non-negative integer"))
                })?;
                form.max_tokens = Some(form.max_tokens.map_or(n, |m| m.min(n)));
            }
            "temperature" if !text.is_empty() => {
                form.temperature = text
                    .parse::<f64>()
                    .ok()
                    .filter(|t| (0.0..=1.0).contains(t))
                    .ok_or_else(|| {
                        ApiError::bad_param("temperature", "`temperature` must be between 0 and 1")
                    })?
            }
            _ => {}
        }
    }
    if form.file.is_empty() {
        return Err(ApiError::bad_param(
            "file",
            "`file` (the audio) is required",
        ));
    }
    Ok(form)
}

/// The answer body: `json` (`text`) or `verbose_json` (task, language, duration,
/// segments), with the usage OpenAI gives for audio (its duration).
pub(crate) fn response(t: &Transcript, task: Task, verbose: bool) -> serde_json::Value {
    use serde_json::json;
    let usage = json!({"type": "duration", "seconds": (t.duration * 100.0).round() / 100.0});
    if !verbose {
        return json!({"text": t.text, "usage": usage});
    }
    let segments: Vec<serde_json::Value> = t
        .segments
        .iter()
        .enumerate()
        .map(|(i, s)| {
            json!({"id": i, "seek": (s.start * 100.0) as u64, "start": s.start, "end": s.end,
                   "text": s.text, "tokens": s.tokens, "temperature": 0.0,
                   "avg_logprob": s.avg_logprob, "compression_ratio": 0.0, "no_speech_prob": 0.0})
        })
        .collect();
    json!({
        "task": match task { Task::Transcribe => "transcribe", Task::Translate => "translate" },
        "language": t.language,
        "duration": t.duration,
        "text": t.text,
        "segments": segments,
        "usage": usage,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_is_greedy_at_zero_and_stays_in_range() {
        let logits = [0.1, 3.0, 0.2, f32::NEG_INFINITY];
        let mut rng = rand::thread_rng();
        assert_eq!(pick(&logits, 0.0, &mut rng), 1);
        for _ in 0..100 {
            assert!(pick(&logits, 1.0, &mut rng) < 3, "never a masked token");
        }
        assert!(log_softmax_at(&logits, 1) < 0.0);
    }
}
