"""The dashboard in a real browser: headless Chromium loads the index and the target page from
disk, every image loads, screenshots go to the test's tmp dir. The history is two real runs
of the digits onnxruntime suite plus four test-made nights (copies of the second run with
static-int8 60% slower, labelled as such) so the trend has a step to find."""
from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from harness.history.db import HistoryDB
from harness.store import read_run_dir
from harness.history.gates import Gates
from harness.history.regress import compare, select_baseline
from tests.history_support import (chromium_available, chromium_dom, chromium_screenshot, derive_run, quantbench,
                                   real_runs)

QDQ = "digits-cnn-onnxruntime-static-int8-qdq-b1"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    chromium_available()
    runs = real_runs(tmp_path_factory)
    root = tmp_path_factory.mktemp("dashboard")
    url = f"sqlite:///{root / 'history.sqlite'}"
    db = HistoryDB(url)
    for run in runs:
        db.append_run_dir(run, tags=["nightly"])
    for night in range(1, 5):
        run_dir = derive_run(runs[1], root / "derived", f"night-{night}", scale={QDQ: 1.6},
                             started_at=f"2099-01-0{night}T02:00:00Z", label="static-int8 latencies x1.6")
        manifest, rows, lat = read_run_dir(run_dir)
        baseline = select_baseline(db, "latest", "local", exclude_run_id=manifest["run_id"])
        verdicts = compare(pd.DataFrame(rows), baseline, Gates(noise=10.0), lambda c: np.asarray(lat[c]),
                           lambda r: db.latency_arrays([r["result_pk"]]).get(r["result_pk"]))
        db.append_run(manifest, rows, lat, tags=["nightly", "derived"])
        db.record_comparisons(manifest["run_id"], verdicts)
    out = root / "site"
    proc = quantbench("dashboard", "--results-db", url, "--out", str(out))
    assert proc.returncode == 0 and str(out / "index.html") in proc.stdout, proc.stderr
    return {"url": url, "out": out, "root": root}


def _loaded(dom: str) -> tuple[int, int]:
    found = re.search(r'<body[^>]*data-images="(\d+)/(\d+)"', dom)
    assert found, "the page's load handler did not run: " + dom[:500]
    return int(found.group(1)), int(found.group(2))


def test_every_image_loads_in_chromium(site, tmp_path):
    out = site["out"]
    for page in ("index.html", "target-local.html"):
        source = (out / page).read_text()
        assert not re.search(r'(?:src|href)="(?:https?:)?//', source), "the dashboard must not need the network"
        n_img = source.count("<img ")
        assert n_img > 0
        dom = chromium_dom((out / page).as_uri(), tmp_path / f"profile-{page}")
        loaded, total = _loaded(dom)
        assert total == n_img and loaded == total, f"{page}: {loaded}/{total} images loaded"
        assert dom.count('data-loaded="yes"') == n_img and 'data-loaded="no"' not in dom
        shot = chromium_screenshot((out / page).as_uri(), tmp_path / f"profile-shot-{page}", tmp_path / f"{page}.png")
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    target = (out / "target-local.html").read_text()
    images = re.findall(r'<img src="([^"]+)"', target)
    assert any("pareto-" in i for i in images) and any("bars-" in i for i in images)
    assert sum("trend-" in i for i in images) == 5  # one per measured case
    for image in images:  # Pareto and bars are matplotlib PNGs, trends are SVG text
        magic = b"<svg" if image.endswith(".svg") else b"\x89PNG\r\n\x1a\n"
        assert (out / image).read_bytes()[:len(magic)] == magic, image
    assert all(i.endswith(".svg") for i in images if "trend-" in i)


def test_a_missing_image_is_reported_by_the_page(site, tmp_path):
    out = site["out"]
    broken = out / "broken.html"
    broken.write_text((out / "target-local.html").read_text().replace("img/local/pareto-", "img/local/missing-pareto-"))
    dom = chromium_dom(broken.as_uri(), tmp_path / "profile")
    loaded, total = _loaded(dom)
    assert (loaded, total) == (total - 1, total) and total > 1
    assert re.search(r'<p id="broken">These images failed to load: img/local/missing-pareto-', dom)
    assert dom.count('data-loaded="no"') == 1


def test_trends_mark_the_step_and_the_gate(site):
    page = (site["out"] / "target-local.html").read_text()
    figure = re.search(rf'<figure data-case="{QDQ}" data-steps="(\d+)">.*?<figcaption>(.*?)</figcaption>', page, re.S)
    assert figure and int(figure.group(1)) >= 1
    caption = figure.group(2)
    assert re.search(r"regression \+\d+% at run night-1", caption), caption
    assert "gate regressions: night-1" in caption  # night-1 was judged against real-1; nights 2-4 against night-(n-1)
    assert "night-2" not in caption.split("gate regressions:")[1]
    latest = page.split("<h2>Latest run against its baseline</h2>")[1].split("<h2")[0]
    assert "night-4: no regressions or improvements" in latest


def test_the_dashboard_recommends_what_the_command_recommends(site):
    cli = quantbench("recommend", "--target", "local", "--results-db", site["url"])
    assert cli.returncode == 0, cli.stderr
    answer = re.search(r"^digits-cnn \(batch 1\) on local, budget 1 accuracy points: (\S+)$", cli.stdout, re.M).group(1)
    assert answer != "none" and answer.startswith("onnxruntime/")
    index = (site["out"] / "index.html").read_text()
    target = (site["out"] / "target-local.html").read_text()
    assert re.findall(r'data-recommended="([^"]+)"', index) == [answer]
    assert re.findall(r'data-recommended="([^"]+)"', target) == [answer]
    evidence = cli.stdout.splitlines()[1].strip()
    assert evidence.split(":")[0] in target  # the same evidence line heads the page's list
    import html

    from harness.history.recommend import recommend

    [rec] = recommend(HistoryDB(site["url"]).results(target="local"))
    assert html.escape(rec.headline()) in index  # the line a run prints at its end


def test_an_empty_database_renders_a_page_that_says_so(tmp_path):
    proc = quantbench("dashboard", "--results-db", str(tmp_path / "empty.sqlite"), "--out", str(tmp_path / "site"))
    assert proc.returncode == 0, proc.stderr
    assert "holds no runs yet" in (tmp_path / "site" / "index.html").read_text()
