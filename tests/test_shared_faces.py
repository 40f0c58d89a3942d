"""Face strips, annotated frames and tracks on the real clips and photos of ../shared/media
(one pipeline run with a random-weight model: detection and tracking do not depend on it)."""

import base64
import re
import shutil
import subprocess

import cv2
import numpy as np
import pytest
from conftest import MEDIA, needs_shared

from batchemo import RunConfig, run
from batchemo.analysis.annotate import annotate
from batchemo.analysis.report import write_report
from batchemo.config import AnnotateConfig
from batchemo.output.read import load

pytestmark = [pytest.mark.slow, needs_shared]


@pytest.fixture(scope="module")
def shared_run(tmp_path_factory, random_model):
    out = tmp_path_factory.mktemp("shared") / "res.parquet"
    assert run(RunConfig(input=[str(MEDIA)], out=out, model=random_model, quiet=True,
                         workers=0, fps=5)).exit_code == 0
    return out


@pytest.fixture(scope="module")
def report_page(shared_run):
    tables = [load(shared_run, t) for t in ("faces", "frames", "files", "runs")]
    path = write_report(*tables[:3], shared_run.with_name("report.html"), runs=tables[3])
    return path, path.read_text()


def crops(html):
    uris = re.findall(r'src="data:image/jpeg;base64,([^"]+)"', html)
    return [cv2.imdecode(np.frombuffer(base64.b64decode(u), np.uint8), cv2.IMREAD_COLOR)
            for u in uris]


def test_every_shown_track_and_photo_has_decodable_face_crops(shared_run, report_page):
    _, page = report_page
    faces = load(shared_run, "faces")
    assert 'class="ph"' not in page  # every source was found and decoded
    for source, part in faces.groupby("source"):
        section = page.split(f"<h3>{source} ", 1)[1].split("<h3>", 1)[0]
        if part["media_type"].iat[0] == "image":
            imgs = crops(section)
            assert len(imgs) == min(len(part), 60), source
        else:
            shown = section.split("folded away", 1)[0]
            tracks = re.findall(r"<div><b>track (\d+)</b>(.*?)</div></div>", shown, re.S)
            assert tracks or "folded away" in section, source
            for tid, body in tracks:
                imgs = crops(body)
                assert imgs and all(i is not None and i.shape == (80, 80, 3) for i in imgs), \
                    (source, tid)
    solvay = page.split("<h3>images/group_solvay_1927_grayscale.jpg", 1)[1].split("<h3>", 1)[0]
    assert len(re.findall(r"<figcaption>#\d+ \w+ 0\.\d\d</figcaption>", solvay)) >= 20


def test_title_card_track_is_folded_as_suspect(report_page):
    _, page = report_page
    section = page.split("<h3>videos/no_face_title_card.mp4 ", 1)[1].split("<h3>", 1)[0]
    folded = section.split("folded away", 1)[1]
    assert re.search(r"track 0: [^<]*low detector scores", folded)


def test_report_renders_in_a_headless_browser(report_page, tmp_path):
    browser = next((b for b in ("chromium", "chromium-browser", "google-chrome")
                    if shutil.which(b)), None)
    if browser is None:
        pytest.skip("no headless chromium here (apt-get install chromium)")
    path, _ = report_page
    shot = tmp_path / "shot.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'prof'}",
                    "--window-size=1300,9000", f"--screenshot={shot}", path.as_uri()],
                   check=True, capture_output=True, timeout=180)
    img = cv2.imread(str(shot))
    assert img is not None and img.shape[:2] == (9000, 1300)
    # Photo crops are drawn: the page has many distinct colours, not a blank or broken page.
    assert len(np.unique(img[::7, ::7].reshape(-1, 3), axis=0)) > 2000


def test_annotate_the_shared_clips(shared_run, tmp_path):
    r = annotate(AnnotateConfig(results=shared_run, out=tmp_path / "ann", every=1.0))
    faces = load(shared_run, "faces")
    assert r.exit_code == 0
    videos = faces.loc[faces.media_type == "video", "source"].nunique()
    photos = faces.loc[faces.media_type == "image", "source"].nunique()
    folders = [d for d in (tmp_path / "ann").iterdir() if d.is_dir()]
    assert len(folders) == videos and all(any(d.glob("*.jpg")) for d in folders)
    assert len(list((tmp_path / "ann").glob("*.jpg"))) == photos
    v = annotate(AnnotateConfig(results=shared_run, out=tmp_path / "vid", every=0, video=True,
                                source=["videos/no_face_title_card.mp4"]))
    cap = cv2.VideoCapture(str(v.videos[0]))
    n = 0
    while cap.grab():
        n += 1
    assert v.videos[0].suffix == ".webm" and n >= 90  # 95 frames decode from the source
