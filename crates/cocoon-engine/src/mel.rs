//! Whisper's input: the log-mel spectrogram of 16 kHz audio, computed as OpenAI's
//! `whisper.audio.log_mel_spectrogram` (and transformers' feature extractor) compute it,
//! since that is what the models were trained on: a centred STFT (reflect padding by half
//! a window), a periodic Hann window of 400 samples, a hop of 160, the power of each of the
//! 201 bins (the last frame dropped), Slaney mel filters, `log10` clamped to 8 below the
//! maximum, then `(x + 4) / 4`. (candle's `pcm_to_mel` follows whisper.cpp instead: frames
//! not centred and the negative frequencies folded in, doubling the power.)

use candle_transformers::models::whisper::{HOP_LENGTH as HOP, N_FFT, SAMPLE_RATE};
use realfft::RealFftPlanner;

/// The mel filter bank Whisper was trained with (librosa's Slaney-scale, area-normalised
/// filters for a 400-point FFT at 16 kHz), `n_mels` rows of 201 weights.
pub(crate) fn filters(n_mels: usize) -> Vec<f32> {
    let sr = SAMPLE_RATE as f64;
    let n_freqs = N_FFT / 2 + 1;
    let hz_to_mel = |f: f64| {
        if f < 1000.0 {
            3.0 * f / 200.0
        } else {
            15.0 + (f / 1000.0).ln() / (6.4f64.ln() / 27.0)
        }
    };
    let mel_to_hz = |m: f64| {
        if m < 15.0 {
            200.0 * m / 3.0
        } else {
            1000.0 * ((m - 15.0) * (6.4f64.ln() / 27.0)).exp()
        }
    };
    let (lo, hi) = (hz_to_mel(0.0), hz_to_mel(sr / 2.0));
    let points: Vec<f64> = (0..n_mels + 2)
        .map(|i| mel_to_hz(lo + (hi - lo) * i as f64 / (n_mels + 1) as f64))
        .collect();
    let mut out = vec![0f32; n_mels * n_freqs];
    for m in 0..n_mels {
        let (left, center, right) = (points[m], points[m + 1], points[m + 2]);
        let norm = 2.0 / (right - left);
        for k in 0..n_freqs {
            let f = k as f64 * sr / N_FFT as f64;
            let rise = (f - left) / (center - left);
            let fall = (right - f) / (right - center);
            out[m * n_freqs + k] = (rise.min(fall).max(0.0) * norm) as f32;
        }
    }
    out
}

/// The log-mel spectrogram of `pcm` (16 kHz mono; the caller pads a window to 30 s):
/// `filters.len() / 201` rows of `pcm.len() / 160` frames, row-major.
pub(crate) fn log_mel(pcm: &[f32], filters: &[f32]) -> Vec<f32> {
    let n_freqs = N_FFT / 2 + 1;
    let n_mels = filters.len() / n_freqs;
    let frames = pcm.len() / HOP;
    let padded = reflect_pad(pcm, N_FFT / 2);
    let window: Vec<f32> = (0..N_FFT)
        .map(|i| {
            let x = 2.0 * std::f64::consts::PI * i as f64 / N_FFT as f64;
            (0.5 * (1.0 - x.cos())) as f32
        })
        .collect();
    let fft = RealFftPlanner::<f32>::new().plan_fft_forward(N_FFT);
    let mut input = fft.make_input_vec();
    let mut spectrum = fft.make_output_vec();
    let mut scratch = fft.make_scratch_vec();
    let mut power = vec![0f32; n_freqs];
    let mut mel = vec![0f32; n_mels * frames];
    for f in 0..frames {
        let start = f * HOP;
        for (i, x) in input.iter_mut().enumerate() {
            *x = padded.get(start + i).copied().unwrap_or(0.0) * window[i];
        }
        if fft
            .process_with_scratch(&mut input, &mut spectrum, &mut scratch)
            .is_err()
        {
            // Only a length mismatch fails, and the buffers come from the plan.
            continue;
        }
        for (p, c) in power.iter_mut().zip(&spectrum) {
            *p = c.norm_sqr();
        }
        for m in 0..n_mels {
            let row = &filters[m * n_freqs..(m + 1) * n_freqs];
            let sum: f32 = row.iter().zip(&power).map(|(w, p)| w * p).sum();
            mel[m * frames + f] = sum.max(1e-10).log10();
        }
    }
    let floor = mel.iter().copied().fold(f32::NEG_INFINITY, f32::max) - 8.0;
    for v in &mut mel {
        *v = (v.max(floor) + 4.0) / 4.0;
    }
    mel
}

/// `pcm` with `pad` samples mirrored at each end (numpy's `reflect`: the edge sample is
/// not repeated); a signal too short to mirror is padded with zeros instead.
fn reflect_pad(pcm: &[f32], pad: usize) -> Vec<f32> {
    let n = pcm.len();
    let mut out = Vec::with_capacity(n + 2 * pad);
    if n <= pad {
        out.resize(pad, 0.0);
        out.extend_from_slice(pcm);
        out.resize(n + 2 * pad, 0.0);
        return out;
    }
    out.extend((1..=pad).rev().map(|i| pcm[i]));
    out.extend_from_slice(pcm);
    out.extend((1..=pad).map(|i| pcm[n - 1 - i]));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mel_filters_are_slaney_triangles() {
        let f = filters(80);
        assert_eq!(f.len(), 80 * 201);
        // Every filter has weight somewhere, and none below 0.
        for m in 0..80 {
            let row = &f[m * 201..(m + 1) * 201];
            assert!(row.iter().all(|w| *w >= 0.0));
            assert!(row.iter().any(|w| *w > 0.0), "filter {m} is empty");
        }
        // Area normalisation: higher (wider) filters have lower peaks.
        let peak = |m: usize| {
            f[m * 201..(m + 1) * 201]
                .iter()
                .copied()
                .fold(0.0, f32::max)
        };
        assert!(peak(70) < peak(10));
        // The first filter starts at 0 Hz and peaks near 25 Hz (bin 0 or 1).
        assert!(f[0] < f[1] || f[1] == 0.0);
    }

    #[test]
    fn reflect_padding_mirrors_without_repeating_the_edge() {
        assert_eq!(
            reflect_pad(&[1.0, 2.0, 3.0, 4.0], 2),
            [3.0, 2.0, 1.0, 2.0, 3.0, 4.0, 3.0, 2.0]
        );
        assert_eq!(reflect_pad(&[1.0], 2), [0.0, 0.0, 1.0, 0.0, 0.0]);
    }

    #[test]
    fn a_tone_lights_its_own_band() {
        // 1 s of 1 kHz in a 30 s window: 3000 frames; the loudest band of a frame in the
        // tone is the one around 1 kHz, and the silence after it sits at the floor.
        let mut pcm: Vec<f32> = (0..SAMPLE_RATE)
            .map(|i| (2.0 * std::f32::consts::PI * 1000.0 * i as f32 / SAMPLE_RATE as f32).sin())
            .collect();
        pcm.resize(30 * SAMPLE_RATE, 0.0);
        let f = filters(80);
        let mel = log_mel(&pcm, &f);
        let frames = 3000;
        assert_eq!(mel.len(), 80 * frames);
        let at = |m: usize, frame: usize| mel[m * frames + frame];
        let loudest = (0..80)
            .max_by(|a, b| at(*a, 50).total_cmp(&at(*b, 50)))
            .unwrap_or(0);
        let centre = |m: usize| {
            let row = &f[m * 201..(m + 1) * 201];
            let k = (0..201)
                .max_by(|a, b| row[*a].total_cmp(&row[*b]))
                .unwrap_or(0);
            k as f32 * 40.0
        };
        assert!((centre(loudest) - 1000.0).abs() < 150.0, "band {loudest}");
        let floor = mel.iter().copied().fold(f32::INFINITY, f32::min);
        assert_eq!(at(loudest, 2000), floor);
    }
}
