"""Write every hostile file of the adversarial rounds (issue 28) into one folder, so the next round
starts from this one: `python bench/make_hostile.py DIR`, then `batchemo run -i DIR -o out/`.

The files come from the tests' generators (tests/hostile.py: videos whose timestamps jump or start
late; tests/hostile_media.py: decompression bombs, thin photos, sound-only and cut containers);
where the `ffmpeg` CLI is installed, the issue's exact H.264 jump file is added.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import hostile  # noqa: E402
import hostile_media as hm  # noqa: E402
from conftest import write_video  # noqa: E402


def make_all(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    clip = write_video(folder / "clip.mp4", 3.0, 25.0, hostile.SIZE, hostile.one_face)
    made = [clip,
            hostile.jump_mkv(folder, 1e12), hostile.jump_mkv(folder, 1e6),
            hostile.late_start_mkv(folder, 1e9),
            hm.bigtiff_bomb(folder / "bomb.tif"),
            hm.jpeg_bomb_with_junk(folder / "bomb_junk.jpg"),
            hm.mjpeg_bomb_avi(folder / "bomb_mjpeg.avi"),
            hm.thin_png(folder / "thin_wide.png", 20000, 3),
            hm.thin_png(folder / "thin_tall.png", 3, 20000),
            hm.audio_only_mp4(folder / "audio_only.mp4"),
            hm.audio_only_mp4(folder / "audio_named.jpg"),
            hm.audio_only_mkv(folder / "audio_only.mkv"),
            hm.audio_only_mkv(folder / "audio_only.webm", "webm"),
            hm.offset_mkv(folder / "offset_1e9.mkv"),
            hm.truncated_mp4(folder / "truncated.mp4", clip),
            hm.faststart_mp4(folder / "faststart.mp4", clip)]
    jump = hostile.ffmpeg_jump_mkv(folder, 1e12)
    return made + ([jump] if jump else [])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", type=Path)
    for path in make_all(ap.parse_args().folder):
        print(f"{path.stat().st_size:>10,d}  {path}")


if __name__ == "__main__":
    main()
