"""valbench.report.html: the static leaderboard page, checked as text and in a real
headless Chromium (selenium + chromium-driver; skipped, saying why, when either is missing)."""
from __future__ import annotations

import base64
import re
import shutil

import pandas as pd
import pytest

from valbench.report.html import page

PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5Erk"
                       "Jggg==")  # 1 x 1 pixel


def _table() -> pd.DataFrame:
    return pd.DataFrame({
        "dataset": ["adult", "adult", "blog", "blog", "cifar10", "adult"],
        "corruption": ["labels", "features", "labels", "features", "labels", "labels[rate=0.4]"],
        "n": [5, 5, 5, 3, 5, 5],
        "dvgs": ["0.896 ± 0.030", "0.225 ± 0.061", "0.750 ± 0.028", "failed (2 of 5)", "0.954 ± 0.009",
                 "1,204 ± 3 s"],
        "tmc-shapley": ["0.731 ± 0.049 *", "0.130 ± 0.091", "0.671 ± 0.021", "timeout", "NA", "0.6"],
        "random": [0.503, -0.007, 0.509, 0.011, float("nan"), 12.5],
        "marks": ["*", "", "", "failed", "", "* 1 timeout"],
    })


@pytest.fixture
def html(tmp_path):
    fig = tmp_path / "fig2.png"
    fig.write_bytes(PNG)
    return page("Leaderboard <script>alert('title')</script>", [("Table 1 & <b>AUROC</b>", _table())],
                [("Figure 2 <i>caption</i>", fig)],
                {"valbench": "0.1.0", "git": {"commit": "abc", "dirty": False}, "seeds": [0, 1],
                 "note": "<img src=x onerror=alert(1)>"},
                notes="First paragraph.\n\nSecond <b>paragraph</b>.")


def test_page_escapes_all_text(html):
    assert "<script>alert" not in html and "&lt;script&gt;alert(&#x27;title&#x27;)&lt;/script&gt;" in html
    assert "<b>AUROC</b>" not in html and "Table 1 &amp; &lt;b&gt;AUROC&lt;/b&gt;" in html
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "<i>caption</i>" not in html and "Second &lt;b&gt;paragraph&lt;/b&gt;." in html
    assert html.count("<script>") == 1  # the page's own script, nothing from the data


def test_page_is_self_contained(html):
    assert "Content-Security-Policy" in html and "default-src 'none'" in html
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", html)
    assert "<link" not in html and "@import" not in html
    assert f'src="data:image/png;base64,{base64.b64encode(PNG).decode()}"' in html


def test_cells_carry_sort_values_marks_and_filters(html):
    assert '<td class="num" data-sort="-0.007">-0.007</td>' in html
    assert 'data-sort="0.896">0.896 ± 0.030</td>' in html
    assert 'data-sort="1204.0">1,204 ± 3 s</td>' in html  # thousands separators are read as one number
    assert '<td class="num" data-empty>NA</td>' in html  # missing values sort last, in either direction
    assert "<td data-empty>NA</td>" in html  # a text NA too
    assert 'class="mark-stopped" data-sort="0.731">0.731 ± 0.049 *</td>' in html
    assert '<td class="mark-failed">timeout</td>' in html and '<td class="mark-failed">failed</td>' in html
    assert '<td class="mark-failed mark-stopped">* 1 timeout</td>' in html  # both marks, both in the legend
    assert "* = a budget stopped the valuation before it finished" in html and "timed out" in html
    for label, options in (("dataset", ["adult", "blog", "cifar10"]),
                           ("corruption", ["features", "labels", "labels[rate=0.4]"])):
        select = re.search(rf'aria-label="filter by {label}">(.*?)</select>', html).group(1)
        assert re.findall(r'<option value="([^"]*)"', select) == [""] + options
    assert "<td>git.commit</td><td>abc</td>" in html and "<td>seeds</td><td>[0, 1]</td>" in html


def test_a_table_without_marks_or_filter_columns(tmp_path):
    df = pd.DataFrame({"valuer": ["a", "b"], "seconds": [2.0, 10.0]}).set_index("valuer")
    html = page("t", [("Runtime", df)], [], {})
    assert "<select" not in html and 'class="legend"' not in html
    assert "<th" in html and ">valuer</th>" in html  # a named index becomes a column
    assert "none recorded" in html
    html = page("t", [("Table 3: runtime, mean ± std <over seeds>", df)], [], {})
    assert "<h2>Table 3</h2>" in html and '<p class="caption">runtime, mean ± std &lt;over seeds&gt;</p>' in html
    assert '<a href="#t0-section">Table 3</a>' in html


def test_a_pdf_figure_is_refused_with_a_reason(tmp_path):
    pdf = tmp_path / "fig.pdf"
    pdf.write_bytes(b"%PDF-1.4")
    with pytest.raises(ValueError, match="PNG, SVG"):
        page("t", [], [("f", pdf)], {})


# -- in a real browser ---------------------------------------------------------------


def _browser():
    """A headless Chromium driven by selenium, or pytest.skip saying what is missing."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed (pip install selenium; .ci/run installs it)")
    binary = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
    driver = shutil.which("chromedriver")
    if binary is None or driver is None:
        pytest.skip("headless Chromium or its driver is missing (apt-get install chromium chromium-driver; "
                    ".ci/run installs them)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
                "--window-size=1200,1000"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver), options=opts)  # explicit paths: Selenium Manager stays off


def test_sort_and_filter_in_headless_chromium(html, tmp_path, monkeypatch):
    monkeypatch.setenv("SE_OFFLINE", "true")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    path = tmp_path / "leaderboard.html"
    path.write_text(html, encoding="utf-8")
    d = _browser()
    try:
        d.get(path.as_uri())
        headers = d.find_elements(By.CSS_SELECTOR, "#t0 thead th")
        names = [h.text.strip() for h in headers]
        assert names == ["dataset", "corruption", "n", "dvgs", "tmc-shapley", "random", "marks"]

        def column(name):
            i = names.index(name)
            rows = d.find_elements(By.CSS_SELECTOR, "#t0 tbody tr")
            return [r.find_elements(By.TAG_NAME, "td")[i].text for r in rows if r.is_displayed()]

        assert len(column("dataset")) == 6
        assert d.find_element(By.ID, "t0-count").text == "6 of 6 rows shown"
        headers[names.index("random")].click()  # numbers sort numerically, NA last
        assert column("random") == ["-0.007", "0.011", "0.503", "0.509", "12.5", "NA"]
        assert headers[names.index("random")].get_attribute("aria-sort") == "ascending"
        headers[names.index("random")].click()
        assert column("random") == ["12.5", "0.509", "0.503", "0.011", "-0.007", "NA"]
        headers[names.index("dvgs")].click()  # "1,204 ± 3 s" is 1204, not 1; text after the numbers
        assert column("dvgs") == ["0.225 ± 0.061", "0.750 ± 0.028", "0.896 ± 0.030", "0.954 ± 0.009",
                                  "1,204 ± 3 s", "failed (2 of 5)"]
        headers[names.index("dataset")].click()  # text sorts as text, ties keep the previous order
        assert column("dataset") == ["adult", "adult", "adult", "blog", "blog", "cifar10"]

        Select(d.find_element(By.CSS_SELECTOR, 'select[aria-label="filter by dataset"]')).select_by_value("blog")
        assert column("dataset") == ["blog", "blog"]
        assert d.find_element(By.ID, "t0-count").text == "2 of 6 rows shown"
        Select(d.find_element(By.CSS_SELECTOR, 'select[aria-label="filter by corruption"]')).select_by_value("labels")
        assert column("dataset") == ["blog"] and column("corruption") == ["labels"]
        Select(d.find_element(By.CSS_SELECTOR, 'select[aria-label="filter by dataset"]')).select_by_value("")
        assert sorted(column("dataset")) == ["adult", "blog", "cifar10"]  # "labels" only, every dataset
        headers[names.index("n")].click()  # sorting keeps the filter
        assert column("n") == ["5", "5", "5"]

        marked = d.find_elements(By.CSS_SELECTOR, "#t0 td.mark-failed, #t0 td.mark-stopped")
        expected = {"failed (2 of 5)", "timeout", "failed", "0.731 ± 0.049 *", "*", "* 1 timeout"}
        assert {m.get_attribute("textContent") for m in marked} == expected  # hidden rows too
        assert d.find_element(By.CSS_SELECTOR, "figure img").get_property("naturalWidth") == 1  # the data URI loaded
        errors = [e for e in d.get_log("browser") if e.get("level") == "SEVERE"]
        assert not errors, errors  # no script error, nothing the page's security policy had to block
        assert d.save_screenshot(str(tmp_path / "leaderboard.png"))
        assert (tmp_path / "leaderboard.png").read_bytes().startswith(b"\x89PNG")
    finally:
        d.quit()
