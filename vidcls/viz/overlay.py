"""A video with its timeline drawn on it: each frame shows the current window's top-1 label and score.

For a quick look at what a timeline says (`predict --timeline --out-video`), as MMAction2's
long-video demo does. Text is drawn with the 5x7 bitmap font below (printable ASCII, the
classic LCD character set), so no font file or imaging library is needed; the frames are
re-encoded with PyAV at the input's frame count and rate, the sound copied as it is.
"""

from __future__ import annotations

from pathlib import Path

import torch

from vidcls.inference.timeline import Timeline
from vidcls.video.container import DecodeStats, VideoDecodeError
from vidcls.video.decode import open_frames
from vidcls.video.encode import encode_frames

# Glyphs of ASCII 32..126, 5 columns each as 2 hex digits (bit 0 = top row of 7).
_FONT_HEX = (
    "0000000000" "00005f0000" "0007000700" "147f147f14" "242a7f2a12" "2313086462" "3649552250" "0005030000"
    "001c224100" "0041221c00" "14083e0814" "08083e0808" "0050300000" "0808080808" "0060600000" "2010080402"
    "3e5149453e" "00427f4000" "4261514946" "2141454b31" "1814127f10" "2745454539" "3c4a494930" "0171090503"
    "3649494936" "064949291e" "0036360000" "0056360000" "0814224100" "1414141414" "0041221408" "0201510906"
    "324979413e" "7e1111117e" "7f49494936" "3e41414122" "7f4141221c" "7f49494941" "7f09090901" "3e4149497a"
    "7f0808087f" "00417f4100" "2040413f01" "7f08142241" "7f40404040" "7f020c027f" "7f0408107f" "3e4141413e"
    "7f09090906" "3e4151215e" "7f09192946" "4649494931" "01017f0101" "3f4040403f" "1f2040201f" "3f4038403f"
    "6314081463" "0708700807" "6151494543" "007f414100" "0204081020" "0041417f00" "0402010204" "4040404040"
    "0001020400" "2054545478" "7f48444438" "3844444420" "384444487f" "3854545418" "087e090102" "0c5252523e"
    "7f08040478" "00447d4000" "2040443d00" "7f10284400" "00417f4000" "7c04180478" "7c08040478" "3844444438"
    "7c14141408" "081414187c" "7c08040408" "4854545420" "043f444020" "3c4040207c" "1c2040201c" "3c4030403c"
    "4428102844" "0c5050503c" "4464544c44" "0008364100" "00007f0000" "0041360800" "08082a1c08"
)
GLYPH_WIDTH, GLYPH_HEIGHT = 5, 7


def _glyph(char: str) -> torch.Tensor:
    """bool (7, 5) pixels of a printable ASCII character; anything else is drawn as '?'."""
    code = ord(char) if 32 <= ord(char) <= 126 else ord("?")
    columns = bytes.fromhex(_FONT_HEX[(code - 32) * 10:(code - 31) * 10])
    return torch.tensor([[bool(col >> row & 1) for col in columns] for row in range(GLYPH_HEIGHT)])


def text_mask(text: str, scale: int = 1) -> torch.Tensor:
    """bool (7 * scale, 6 * len(text) * scale): the text in the 5x7 font, one blank column between letters."""
    gap = torch.zeros(GLYPH_HEIGHT, 1, dtype=torch.bool)
    row = torch.cat([torch.cat([_glyph(c), gap], dim=1) for c in text], dim=1) if text else gap[:, :0]
    return row.repeat_interleave(scale, 0).repeat_interleave(scale, 1)


def draw_label(frame: torch.Tensor, text: str, scale: int | None = None) -> torch.Tensor:
    """uint8 (H, W, 3) with `text` in white on a dark box at the top left (cut at the right edge).

    scale (pixels per font pixel) defaults to height // 120, at least 1: text about 1/17 of a
    tall frame's height, still readable in a 64-pixel one.
    """
    height, width = frame.shape[:2]
    scale = scale or max(1, height // 120)
    mask = text_mask(text, scale)
    pad = scale
    box_h, box_w = min(height, mask.shape[0] + 2 * pad), min(width, mask.shape[1] + 2 * pad)
    out = frame.clone()
    box = out[:box_h, :box_w]
    box.copy_((box.float() * 0.35).to(torch.uint8))  # darken, keep the picture visible
    mask = mask[:box_h - pad, :box_w - pad]
    box[pad:pad + mask.shape[0], pad:pad + mask.shape[1]][mask] = 255
    return out


def window_caption(timeline: Timeline, window: int) -> str:
    """'up 0.93': the window's top-1 label and its probability."""
    probs = timeline.probs[window]
    best = int(probs.argmax())
    return f"{timeline.labels[best]} {float(probs[best]):.2f}"


def write_annotated_video(source: str | Path, timeline: Timeline, out_path: str | Path, crf: int = 20,
                          stats: DecodeStats | None = None, audio: bool = True) -> Path:
    """Re-encode `source` (H.264, yuv420p) with the current window's caption on every frame.

    Same frame count and rate as the input (frames keep their order; the rate is the
    stream's average rate); frames are upright (rotation applied), odd sizes padded to even.
    `audio`: the source's first audio stream is copied in unchanged (remuxed, not re-encoded).
    The file appears atomically, like every file vidcls writes.
    """
    captions = [window_caption(timeline, k) for k in range(len(timeline.windows))]
    try:
        with open_frames(source, stats) as reader:
            info = reader.info
            pictures = (draw_label(rgb, captions[timeline.window_at(index / info.fps)]) for index, rgb in reader)
            return encode_frames(out_path, pictures, (info.height, info.width), info.fps, crf=crf,
                                 audio_from=source if audio else None)
    except VideoDecodeError as exc:
        raise VideoDecodeError(f"{source}: {exc}") from exc
