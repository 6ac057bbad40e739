//! Audio files as Whisper needs them: decoded (WAV, MP3, FLAC, Ogg Vorbis, MP4/M4A AAC,
//! Matroska/WebM with those codecs: what `symphonia` reads in pure Rust; Opus in Ogg or
//! WebM, Telegram's voice notes, demuxed by `symphonia` and decoded by `opus-rs`, also
//! pure Rust), mixed down to mono and resampled to 16 kHz (`rubato`).

use std::io::Cursor;

use rubato::{FftFixedIn, Resampler};
use symphonia::core::audio::SampleBuffer;
use symphonia::core::codecs::{DecoderOptions, CODEC_TYPE_NULL, CODEC_TYPE_OPUS};
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::FormatOptions;
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;
use symphonia::core::probe::Hint;

/// Whisper's sample rate.
pub(crate) const SAMPLE_RATE: usize = 16_000;

/// The longest audio accepted (Whisper servers commonly allow about this much per request).
pub(crate) const MAX_SECONDS: usize = 2 * 3600;

/// Why a file could not be read as audio.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AudioError {
    /// Not a container or codec we read.
    #[error("cannot read this audio ({0}); send WAV, MP3, FLAC, Ogg Vorbis or Opus, M4A/AAC, or WebM with those codecs")]
    Unsupported(String),
    /// The file is damaged.
    #[error("the audio is damaged: {0}")]
    Damaged(String),
    /// No samples at all.
    #[error("the audio file holds no sound")]
    Empty,
    /// Longer than [`MAX_SECONDS`].
    #[error("the audio is {0} s long; at most {MAX_SECONDS} s are accepted")]
    TooLong(usize),
}

/// Decodes `bytes` (its file name's extension, if any, as a hint) into mono 16 kHz samples.
pub(crate) fn decode(bytes: &[u8], extension: Option<&str>) -> Result<Vec<f32>, AudioError> {
    let source = MediaSourceStream::new(Box::new(Cursor::new(bytes.to_vec())), Default::default());
    let mut hint = Hint::new();
    if let Some(ext) = extension {
        hint.with_extension(ext);
    }
    let probed = symphonia::default::get_probe()
        .format(
            &hint,
            source,
            &FormatOptions::default(),
            &MetadataOptions::default(),
        )
        .map_err(|e| AudioError::Unsupported(e.to_string()))?;
    let mut format = probed.format;
    let track = format
        .tracks()
        .iter()
        .find(|t| t.codec_params.codec != CODEC_TYPE_NULL)
        .ok_or_else(|| AudioError::Unsupported("no audio track".into()))?;
    let track_id = track.id;
    if track.codec_params.codec == CODEC_TYPE_OPUS {
        // Opus decodes at 16 kHz itself; its pre-skip is counted at 48 kHz.
        let skip = track.codec_params.delay.unwrap_or(0) as usize / 3;
        return decode_opus(format.as_mut(), track_id, skip);
    }
    let mut decoder = symphonia::default::get_codecs()
        .make(&track.codec_params, &DecoderOptions::default())
        .map_err(|e| AudioError::Unsupported(e.to_string()))?;
    let mut rate = track.codec_params.sample_rate.unwrap_or(0) as usize;
    let mut mono = Vec::new();
    while let Some(packet) = next_packet(format.as_mut(), track_id)? {
        let decoded = match decoder.decode(&packet) {
            Ok(d) => d,
            // A damaged packet is skipped, as players do.
            Err(SymphoniaError::DecodeError(_)) => continue,
            Err(e) => return Err(AudioError::Damaged(e.to_string())),
        };
        let spec = *decoded.spec();
        rate = spec.rate as usize;
        let channels = spec.channels.count().max(1);
        let mut buffer = SampleBuffer::<f32>::new(decoded.capacity() as u64, spec);
        buffer.copy_interleaved_ref(decoded);
        for frame in buffer.samples().chunks(channels) {
            mono.push(frame.iter().sum::<f32>() / channels as f32);
        }
        if rate > 0 && mono.len() / rate > MAX_SECONDS {
            return Err(AudioError::TooLong(mono.len() / rate));
        }
    }
    if mono.is_empty() || rate == 0 {
        return Err(AudioError::Empty);
    }
    resample(&mono, rate)
}

/// The next packet of `track`; `None` at the end of the stream.
fn next_packet(
    format: &mut dyn symphonia::core::formats::FormatReader,
    track: u32,
) -> Result<Option<symphonia::core::formats::Packet>, AudioError> {
    loop {
        match format.next_packet() {
            Ok(p) if p.track_id() == track => return Ok(Some(p)),
            Ok(_) => continue,
            Err(SymphoniaError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Ok(None)
            }
            Err(SymphoniaError::ResetRequired) => return Ok(None),
            Err(e) => return Err(AudioError::Damaged(e.to_string())),
        }
    }
}

/// Decodes the Opus packets of `track` straight to 16 kHz mono, dropping the first `skip`
/// samples (the encoder's pre-skip).
fn decode_opus(
    format: &mut dyn symphonia::core::formats::FormatReader,
    track: u32,
    skip: usize,
) -> Result<Vec<f32>, AudioError> {
    // The longest Opus packet is 120 ms.
    const MAX_FRAME: usize = SAMPLE_RATE * 120 / 1000;
    let mut decoder = opus_rs::OpusDecoder::new(SAMPLE_RATE as i32, 1)
        .map_err(|e| AudioError::Unsupported(format!("Opus: {e}")))?;
    let mut frame = vec![0f32; MAX_FRAME];
    let mut out = Vec::new();
    while let Some(packet) = next_packet(format, track)? {
        // A damaged packet is skipped, as players do.
        if let Ok(n) = decoder.decode(&packet.data, MAX_FRAME, &mut frame) {
            out.extend_from_slice(&frame[..n.min(MAX_FRAME)]);
        }
        if out.len() / SAMPLE_RATE > MAX_SECONDS {
            return Err(AudioError::TooLong(out.len() / SAMPLE_RATE));
        }
    }
    let out = out.get(skip..).unwrap_or(&[]).to_vec();
    if out.is_empty() {
        return Err(AudioError::Empty);
    }
    Ok(out)
}

/// `samples` at `rate` Hz, resampled to [`SAMPLE_RATE`].
pub(crate) fn resample(samples: &[f32], rate: usize) -> Result<Vec<f32>, AudioError> {
    if rate == SAMPLE_RATE {
        return Ok(samples.to_vec());
    }
    let damaged = |e: &dyn std::fmt::Display| AudioError::Damaged(format!("resampling: {e}"));
    let mut resampler =
        FftFixedIn::<f32>::new(rate, SAMPLE_RATE, 1024, 2, 1).map_err(|e| damaged(&e))?;
    let expected = samples.len() * SAMPLE_RATE / rate;
    let delay = resampler.output_delay();
    let mut out = Vec::with_capacity(expected + delay + 1024);
    let mut rest = samples;
    while rest.len() >= resampler.input_frames_next() {
        let (chunk, tail) = rest.split_at(resampler.input_frames_next());
        let produced = resampler.process(&[chunk], None).map_err(|e| damaged(&e))?;
        out.extend_from_slice(&produced[0]);
        rest = tail;
    }
    if !rest.is_empty() {
        let produced = resampler
            .process_partial(Some(&[rest]), None)
            .map_err(|e| damaged(&e))?;
        out.extend_from_slice(&produced[0]);
    }
    // Flush what the filter still holds, then drop its delay at the start.
    while out.len() < expected + delay {
        let produced = resampler
            .process_partial::<&[f32]>(None, None)
            .map_err(|e| damaged(&e))?;
        if produced[0].is_empty() {
            break;
        }
        out.extend_from_slice(&produced[0]);
    }
    let end = (delay + expected).min(out.len());
    Ok(out[delay.min(end)..end].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::wav_bytes;

    fn tone(rate: u32, seconds: f32, hz: f32) -> Vec<f32> {
        (0..(rate as f32 * seconds) as usize)
            .map(|i| (i as f32 * hz * 2.0 * std::f32::consts::PI / rate as f32).sin() * 0.5)
            .collect()
    }

    #[test]
    fn wav_at_any_rate_becomes_16_khz_mono() {
        for rate in [8_000u32, 16_000, 44_100, 48_000] {
            let samples =
                decode(&wav_bytes(&tone(rate, 1.5, 440.0), rate), Some("wav")).expect("decoded");
            let expected = (1.5 * SAMPLE_RATE as f32) as usize;
            assert!(
                samples.len().abs_diff(expected) <= 2,
                "{rate} Hz: {} samples, expected {expected}",
                samples.len()
            );
            // The tone survives: its level stays near 0.5 / sqrt(2).
            let middle = &samples[4000..20000];
            let rms = (middle.iter().map(|x| x * x).sum::<f32>() / middle.len() as f32).sqrt();
            assert!((rms - 0.3535).abs() < 0.02, "{rate} Hz: rms {rms}");
        }
    }

    /// An Ogg Opus file (RFC 7845), as Telegram's voice notes are: `samples` at 48 kHz
    /// mono, encoded in 20 ms packets.
    fn ogg_opus(samples: &[f32]) -> Vec<u8> {
        let mut encoder =
            opus_rs::OpusEncoder::new(48_000, 1, opus_rs::Application::Voip).expect("encoder");
        let mut file = Vec::new();
        let mut writer = ogg::PacketWriter::new(&mut file);
        let serial = 7;
        let mut head = b"OpusHead".to_vec();
        head.extend_from_slice(&[1, 1]); // version, channels
        head.extend_from_slice(&312u16.to_le_bytes()); // pre-skip
        head.extend_from_slice(&48_000u32.to_le_bytes());
        head.extend_from_slice(&0u16.to_le_bytes()); // gain
        head.push(0); // mapping family
        writer
            .write_packet(head, serial, ogg::PacketWriteEndInfo::EndPage, 0)
            .expect("head");
        let mut tags = b"OpusTags".to_vec();
        tags.extend_from_slice(&5u32.to_le_bytes());
        tags.extend_from_slice(b"tests");
        tags.extend_from_slice(&0u32.to_le_bytes());
        writer
            .write_packet(tags, serial, ogg::PacketWriteEndInfo::EndPage, 0)
            .expect("tags");
        let frames: Vec<&[f32]> = samples.chunks(960).filter(|c| c.len() == 960).collect();
        for (i, frame) in frames.iter().enumerate() {
            let mut packet = vec![0u8; 1500];
            let n = encoder.encode(frame, 960, &mut packet).expect("encode");
            packet.truncate(n);
            let end = if i + 1 == frames.len() {
                ogg::PacketWriteEndInfo::EndStream
            } else {
                ogg::PacketWriteEndInfo::NormalPacket
            };
            writer
                .write_packet(packet, serial, end, 312 + (i as u64 + 1) * 960)
                .expect("packet");
        }
        drop(writer);
        file
    }

    #[test]
    fn ogg_opus_voice_notes_are_decoded() {
        let samples = decode(&ogg_opus(&tone(48_000, 2.0, 440.0)), Some("ogg")).expect("decoded");
        let expected = 2 * SAMPLE_RATE - 312 / 3;
        assert!(
            samples.len().abs_diff(expected) <= 2,
            "{} samples, expected {expected}",
            samples.len()
        );
        let middle = &samples[4000..28000];
        let rms = (middle.iter().map(|x| x * x).sum::<f32>() / middle.len() as f32).sqrt();
        assert!(
            (rms - 0.3535).abs() < 0.05,
            "the tone survives Opus: rms {rms}"
        );
    }

    #[test]
    fn what_is_not_audio_is_refused_clearly() {
        assert!(matches!(
            decode(b"not audio at all", None),
            Err(AudioError::Unsupported(_))
        ));
        assert!(matches!(
            decode(&wav_bytes(&[], 16_000), Some("wav")),
            Err(AudioError::Empty | AudioError::Damaged(_))
        ));
        let text = AudioError::Unsupported("x".into()).to_string();
        assert!(text.contains("WAV"), "{text}");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        #[test]
        fn damaged_files_are_refused_without_panicking(
            tail in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2000),
            cut in 0usize..200,
        ) {
            let _ = decode(&tail, None);
            // A real header with a damaged or cut body.
            let mut wav = wav_bytes(&[0.1; 400], 8_000);
            wav.truncate(44 + cut);
            wav.extend_from_slice(&tail);
            let _ = decode(&wav, Some("wav"));
        }
    }
}
