"""Audio: which files, what their headers say, how they are decoded, and the one check of decoded samples.

skips.py            `Skipped` (a file left out, and why) and the per-reason counts summaries print
sources.py          audio files: one extension list, regular files only, utterance ids; `AudioSource`
                    (a span of a file, or encoded bytes held elsewhere)
probe.py            headers -> `AudioItem`s (duration, declared WAV length), unreadable/short/long skipped
screen.py           decoded audio: NaN/Inf and truncated files skipped, silence reported
decode_soundfile.py one file or span -> mono float32 at 16 kHz (soundfile + polyphase resampling)
decode_dali.py      the DALI pipeline (CPU decoding, GPU resampling)
loader.py           `AudioLoader`: length-bucketed batches from either decoder, every batch screened

Modules import torch, scipy or DALI only where they decode, so listing and probing stay light.
"""
