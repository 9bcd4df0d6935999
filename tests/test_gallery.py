"""`zoo leaderboard` and `zoo gallery`: tables gathered from run folders, and the static site
checked in a real headless browser (Debian's chromium driven by Playwright): the index loads,
a link leads to a run page, every image decodes, no console errors."""
import contextlib
import json
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from genzoo import api
from genzoo.cli import cli

CHROMIUM = os.environ.get("GENZOO_CHROMIUM") or shutil.which("chromium") or \
    shutil.which("chromium-browser")
BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    quick = {"train.steps": 2, "batch_size": 8, "sample_n": 4, "log_every": 1}
    api.train("cnn-fashion", "quick", quick, out=root / "cnn", progress=False)
    gen = api.train("pixelcnn", "quick", quick, out=root / "pixelcnn", progress=False)
    text = api.train("gpt", "quick", quick,
                     out=root / "gpt", progress=False)
    # figures as zoo eval and zoo bench RUN leave them
    (gen.path / "eval.json").write_text(json.dumps({
        "split": "test", "bits_per_dim": 0.6, "fid": 12.5, "kid": 0.05,
        "protocol": "features: test; real: 100 test images; fake: 100 samples"}))
    (gen.path / "bench.json").write_text(json.dumps([
        {"model": "pixelcnn", "device": "cpu", "metric": "train_throughput",
         "setting": "x (Trainer loop incl. final checkpoint)", "median": 321.0, "unit": "samples/s"},
        {"model": "pixelcnn", "device": "cpu", "metric": "sample_latency",
         "setting": "sampler=cached n=16", "median": 0.002, "unit": "s/sample"}]))
    return root, gen, text


def test_leaderboard_gathers_eval_and_bench(runs):
    root, gen, _ = runs
    r = CliRunner().invoke(cli, ["leaderboard", str(root), "--markdown"])
    assert r.exit_code == 0, r.output
    line = next(l for l in r.output.splitlines() if l.startswith("| pixelcnn"))
    for cell in ("0.6 bits/dim", "12.50", "0.0500", "321", "2", "cpu", "52k"):
        assert cell in line, (cell, line)
    assert "features: test; real: 100 test images" in r.output
    rows = json.loads(CliRunner().invoke(cli, ["leaderboard", str(root), "--json"]).output)
    assert {row["model"] for row in rows} == {"cnn-fashion", "pixelcnn", "gpt"}
    r = CliRunner().invoke(cli, ["leaderboard", str(root / "nope")])
    assert r.exit_code != 0 and len(r.output.strip().splitlines()) == 1


def test_leaderboard_names_the_frame_a_cropped_model_sees(tmp_path):
    from genzoo.core.leaderboard import row
    (tmp_path / "config.json").write_text(json.dumps(
        {"name": "ebm", "data": {"name": "mnist-5k", "size": 16, "crop": 20}}))
    assert row(tmp_path).dataset == "mnist-5k 16px of the centre 20x20"


def test_gallery_writes_a_self_contained_site(runs, tmp_path):
    root, gen, text = runs
    r = CliRunner().invoke(cli, ["gallery", str(root), "--out", str(tmp_path / "site")])
    assert r.exit_code == 0, r.output
    index = (tmp_path / "site" / "index.html").read_text()
    assert 'href="./pixelcnn/index.html"' in index and "12.50" in index
    page = (tmp_path / "site" / "pixelcnn" / "index.html").read_text()
    assert "<img" in page and "bits_per_dim" in page and '"family": "pixelcnn"' in page
    assert "<pre>" in (tmp_path / "site" / "gpt" / "index.html").read_text()
    for img in (tmp_path / "site").glob("*/*.png"):  # copies, not links to the run folders
        assert not img.is_symlink()


@contextlib.contextmanager
def browser_page():
    """A page of the system chromium (skips when there is none), and the list its console
    errors, page errors and dialogs (a script that ran: ``dialog: ...``) are collected in."""
    if not CHROMIUM:
        pytest.skip("no chromium binary (Debian: apt-get install chromium); set GENZOO_CHROMIUM")
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="playwright not installed (pip install playwright)")
    errors: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        try:
            page = browser.new_page()
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("dialog", lambda d: (errors.append(f"dialog: {d.message}"), d.dismiss()))
            yield page, errors
        finally:
            browser.close()


def images_of(page) -> list:
    """[src, complete, naturalWidth] of every <img> on the page: decoded ones have a width."""
    return page.eval_on_selector_all(
        "img", "imgs => imgs.map(i => [i.getAttribute('src'), i.complete, i.naturalWidth])")


def test_gallery_in_a_real_browser(runs, tmp_path):
    root, _, _ = runs
    site = tmp_path / "site"
    assert CliRunner().invoke(cli, ["gallery", str(root), "--out", str(site)]).exit_code == 0
    with browser_page() as (page, errors):
        page.goto((site / "index.html").as_uri())
        assert page.title() == "genzoo gallery"
        assert page.locator("table tbody tr").count() == 3
        page.click('a[href="./pixelcnn/index.html"]')
        page.wait_for_load_state("load")
        assert page.url.endswith("pixelcnn/index.html")
        widths = images_of(page)
        assert widths, "the run page shows no images"
        assert all(done and w > 0 for _, done, w in widths), widths
        page.click("text=all runs")
        page.wait_for_load_state("load")
        assert Path(page.url.replace("file://", "")).name == "index.html"
    assert not errors, errors


def test_music_pages_embed_an_audio_player(runs, tmp_path):
    import wave
    _, gen, _ = runs
    run = tmp_path / "music-run"
    shutil.copytree(gen.path, run)
    with wave.open(str(run / "samples" / "final-0.wav"), "wb") as w:  # as the music writer makes
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(8000)
        w.writeframes(b"\0\0" * 800)
    r = CliRunner().invoke(cli, ["gallery", str(run), "--out", str(tmp_path / "site")])
    assert r.exit_code == 0, r.output
    page = next((tmp_path / "site").glob("*/index.html")).read_text()
    assert '<audio controls preload="none" src="./audio-00-final-0.wav">' in page
    assert next((tmp_path / "site").glob("*/audio-00-final-0.wav")).stat().st_size > 1000


HOSTILE = ["javascript:alert(document.domain)", "with space", "ünïcødé ラン", "a#b?c%20d&e=1",
           "<img src=x onerror=alert(1)>", "quote\"s and 'apostrophes'"]


@pytest.fixture(scope="module")
def hostile_runs(runs, tmp_path_factory):
    """The pixelcnn run copied under names a user (or an attacker) may give a run folder."""
    _, gen, _ = runs
    root = tmp_path_factory.mktemp("hostile")
    for name in HOSTILE:
        shutil.copytree(gen.path, root / name)
    return root


def test_gallery_links_stay_relative_paths_for_hostile_names(hostile_runs, tmp_path):
    import html as htmllib
    import re
    from urllib.parse import unquote
    site = tmp_path / "site"
    r = CliRunner().invoke(cli, ["gallery", str(hostile_runs), "--out", str(site)])
    assert r.exit_code == 0, r.output
    index = (site / "index.html").read_text()
    table = index.split('<table class="board">', 1)[1]
    links = [htmllib.unescape(h) for h in re.findall(r'<a href="([^"]*)"', table)]
    assert len(links) == len(HOSTILE)
    cards = [htmllib.unescape(h) for h in re.findall(r'<a class="card" href="([^"]*)"', index)]
    assert sorted(cards) == sorted(links)  # one card per run, to the same page
    for src in re.findall(r'<img[^>]* src="([^"]*)"', index):
        assert src.startswith("./") and (site / unquote(htmllib.unescape(src)[2:])).is_file()
    for link in links:
        assert link.startswith("./") and link.endswith("/index.html"), link
        assert (site / unquote(link[2:])).is_file(), link  # the link reaches its page
    assert "javascript:" not in "".join(links).split("./", 1)[0]
    assert "<img src=x" not in index and "onerror=alert(1)>" not in index.replace("&lt;", "")
    for src in re.findall(r'<img[^>]* src="([^"]*)"', (site / unquote(links[0][2:])).read_text()):
        assert src.startswith("./")


def test_gallery_never_writes_outside_out(runs, tmp_path):
    _, gen, _ = runs
    run = tmp_path / "runs" / "mine"
    shutil.copytree(gen.path, run)
    (run / "samples").mkdir(exist_ok=True)
    site = tmp_path / "deep" / "site"
    r = CliRunner().invoke(cli, ["gallery", str(run / "samples" / ".."), "--out", str(site)])
    assert r.exit_code == 0, r.output
    assert (site / "mine" / "index.html").is_file()
    assert sorted(p.name for p in (tmp_path / "deep").iterdir()) == ["site"]  # nothing beside it


def test_gallery_hostile_names_in_a_real_browser(hostile_runs, tmp_path):
    site = tmp_path / "site"
    assert CliRunner().invoke(cli, ["gallery", str(hostile_runs), "--out", str(site)]).exit_code == 0
    with browser_page() as (page, errors):
        index = (site / "index.html").as_uri()
        page.goto(index)
        count = page.locator("table tbody a").count()
        assert count == len(HOSTILE)
        for i in range(count):
            page.goto(index)
            page.locator("table tbody a").nth(i).click()
            page.wait_for_load_state("load")
            assert page.url.startswith("file://") and page.url.endswith("/index.html"), page.url
            assert page.title().startswith("pixelcnn"), page.url
            imgs = images_of(page)
            assert imgs and all(done and w > 0 for _, done, w in imgs), imgs
    assert not errors, errors  # no console error, and no dialog: no script ran


def test_index_cards_with_thumbnails_in_a_real_browser(runs, tmp_path):
    root, _, _ = runs
    site = tmp_path / "site"
    assert CliRunner().invoke(cli, ["gallery", str(root), "--out", str(site)]).exit_code == 0
    with browser_page() as (page, errors):
        page.set_viewport_size({"width": 1200, "height": 900})
        page.goto((site / "index.html").as_uri())
        cards = page.locator("a.card")
        assert cards.count() == 3
        texts = {cards.nth(i).locator("b").inner_text(): cards.nth(i).inner_text()
                 for i in range(3)}
        assert set(texts) == {"cnn-fashion", "pixelcnn", "gpt"}
        assert "FID 12.50" in texts["pixelcnn"] and "0.6 bits/dim" in texts["pixelcnn"]
        assert "fashion-mnist-1k" in texts["cnn-fashion"]
        # image models show a picture, the text model an excerpt of its sample
        assert page.locator("a.card img").count() == 2 and page.locator("a.card pre").count() == 1
        imgs = images_of(page)
        assert len(imgs) == 2 and all(done and w == 200 for _, done, w in imgs), imgs
        page.screenshot(path=str(tmp_path / "index.png"), full_page=True)
        # the leaderboard below the cards sorts by a clicked column (empty cells last)
        def models():
            return page.eval_on_selector_all("table.board tbody tr",
                                             "rows => rows.map(r => r.cells[0].textContent)")
        page.click("table.board th:has-text('FID')")
        assert models()[0] == "pixelcnn"
        page.click("table.board th:has-text('model')")
        assert models() == ["cnn-fashion", "gpt", "pixelcnn"]
        page.click("table.board th:has-text('model')")
        assert models() == ["pixelcnn", "gpt", "cnn-fashion"]
        page.click("a.card:has-text('gpt')")
        page.wait_for_load_state("load")
        assert page.url.endswith("gpt/index.html")
    assert not errors, errors
    assert (tmp_path / "index.png").stat().st_size > 10_000


def test_thumbnails_crop_grids_and_fit_figures(tmp_path):
    from PIL import Image

    from genzoo.core.gallery import THUMB, thumbnail
    grid = tmp_path / "grid.png"
    Image.new("RGB", (400, 400), "white").save(grid)
    assert thumbnail(grid, tmp_path / "a.png", grid=True)
    assert Image.open(tmp_path / "a.png").size == (THUMB, THUMB)
    roll = tmp_path / "roll.png"  # a piano roll or scatter plot: the whole figure, scaled
    Image.new("RGB", (800, 200), "white").save(roll)
    assert thumbnail(roll, tmp_path / "b.png", grid=False)
    assert Image.open(tmp_path / "b.png").size == (THUMB, 50)
    frames = [Image.new("RGB", (64, 64), c) for c in ("red", "blue")]
    frames[0].save(tmp_path / "v.gif", save_all=True, append_images=frames[1:])
    assert thumbnail(tmp_path / "v.gif", tmp_path / "c.png", grid=False)  # the poster frame
    assert Image.open(tmp_path / "c.png").convert("RGB").getpixel((0, 0))[0] > 200
    (tmp_path / "bad.png").write_bytes(b"not a png")
    assert not thumbnail(tmp_path / "bad.png", tmp_path / "d.png", grid=True)


def test_the_card_shows_the_final_view_else_the_newest_grid(tmp_path):
    from genzoo.core.gallery import _final_sample
    samples = tmp_path / "run" / "samples"
    samples.mkdir(parents=True)
    assert _final_sample(tmp_path / "run") is None
    for name in ("step_000100.txt", "step_000010.png", "step_000200.png"):
        (samples / name).write_bytes(b"")
    assert _final_sample(tmp_path / "run").name == "step_000200.png"  # a picture before text
    for name in ("final-attention.png", "final.png", "final.txt"):
        (samples / name).write_bytes(b"")
    assert _final_sample(tmp_path / "run").name == "final.png"
