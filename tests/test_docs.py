"""The documents: README.md stays a map (at most 250 lines), every relative link and image in README.md and
docs/*.md resolves, the docs hold no build history; and ``report --publish`` writes the README's
headline block and docs/results.md (on copies, never the repository's own files), with preview figures
saying so in their titles."""
import json
import re
import shutil
from pathlib import Path

import pytest
from matplotlib.text import Text

from src.__main__ import main
from src.report import figures as F
from src.report import headline as H

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
IMG = re.compile(r"<img[^>]*\ssrc=\"([^\"]+)\"")


def _slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _prose(text: str) -> str:
    """``text`` without fenced code blocks and inline code (a link written as code is not a link)."""
    return re.sub(r"`[^`\n]*`", "", re.sub(r"^```.*?^```", "", text, flags=re.S | re.M))


def _anchors(path: Path) -> set[str]:
    return {_slug(m) for m in re.findall(r"^#+ (.+)$", _prose(path.read_text(encoding="utf-8")), re.M)}


def broken_links(pages: list[Path]) -> list[str]:
    """Every relative link or image of ``pages`` whose file (or heading anchor) does not exist."""
    bad = []
    for page in pages:
        text = _prose(page.read_text(encoding="utf-8"))
        for target in LINK.findall(text) + IMG.findall(text):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
                continue
            file, _, anchor = target.partition("#")
            path = (page.parent / file).resolve() if file else page
            if not path.exists():
                bad.append(f"{page.name}: {target}")
            elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
                bad.append(f"{page.name}: {target} (no such heading)")
    return bad


def test_broken_links_finds_a_missing_file_and_a_missing_heading(tmp_path):
    (tmp_path / "a.png").write_bytes(b"x")
    (tmp_path / "b.md").write_text("# The Heading – here\n")
    page = tmp_path / "README.md"
    page.write_text("[ok](b.md#the-heading--here) ![ok](a.png) [web](https://x.org/y) `[code](nope.md)`\n"
                    "[gone](missing.md) ![gone](img/none.png) [bad anchor](b.md#other) <img src=\"no.png\">\n"
                    "```\n[in a block](nope2.md)\n```\n")
    assert broken_links([page]) == ["README.md: missing.md", "README.md: img/none.png",
                                    "README.md: b.md#other (no such heading)", "README.md: no.png"]


def test_readme_is_a_map_and_every_link_resolves():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 250
    docs = sorted((ROOT / "docs").glob("*.md"))
    assert {"results.md", "method.md", "reproducibility.md", "architecture.md", "data.md"} <= {p.name for p in docs}
    assert broken_links([ROOT / "README.md", *docs]) == []
    for page in docs:  # each topic is reachable from the README
        assert f"](docs/{page.name}" in readme, page.name


def test_readme_order_and_its_fresh_machine_commands():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    order = [readme.index(h) for h in ("\n## Results", "\n## Use", "\n## Your own data", "\n## GPU",
                                       "\n## Documentation")]
    assert order == sorted(order)
    first_screen = readme[:readme.index("\n## Results")]
    assert ".venv/bin/python -m src reproduce" in first_screen and ".venv/bin/python -m pytest -q" in first_screen
    assert H.HEADLINE_MARKERS[0] in readme and H.HEADLINE_MARKERS[1] in readme


@pytest.mark.parametrize("pattern", [r"\bissue #?\d+", r"\bsessions?\b", r"\bload (?:≈|\d)", r"none was available"])
def test_readme_and_docs_hold_no_build_history(pattern):
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        found = re.findall(pattern, page.read_text(encoding="utf-8"), re.I)
        assert not found, (page.name, found)


# ---------------------------------------------------------------- the generator

def _summary(runs, name="quick"):
    return {"grid": {"preset": {"name": name, "noise_sigma": 0.1, "epochs": 20, "image_size": 128},
                     "dataset": "synthetic sample (src.synthetic)", "source": "sample", "n_images": 2000,
                     "generator": {"generator": "src.synthetic", "version": 2, "n": 2000}, "device": "cpu (x86_64, 2 cores)", "torch": "2.x",
                     "started": "2026-11-28T10:00:00"},
            "runs": runs, "baselines": {"val": {"mean image": {"psnr": 12.0, "ssim": 0.3}},
                                        "test": {"mean image": {"psnr": 12.5, "ssim": 0.31}}}}


def _run(noise_train, converged, val, test, seed=0):
    """A summary row of the unregularized AE; val/test: {condition: (psnr, ssim)}."""
    def split(d):
        return {c: {"psnr": p, "ssim": s, "mse": 0.0} for c, (p, s) in d.items()}
    return {"run": f"ae-{noise_train}-{seed}", "model": "ae", "reg": "none", "noise_train": noise_train, "seed": seed,
            "convergence": {"converged": converged}, "val": split(val), "test": split(test)}


def test_headline_table_takes_noisy_columns_from_the_noise_trained_model():
    clean = _run(0.0, True, {"clean": (20.0, 0.5), "gaussian_0.1": (1.0, 0.01)},
                 {"clean": (21.0, 0.6), "gaussian_0.1": (2.0, 0.02)})
    noisy = _run(0.1, False, {"clean": (3.0, 0.03), "gaussian_0.1": (18.0, 0.4)},
                 {"clean": (4.0, 0.04), "gaussian_0.1": (19.0, 0.45)})
    lines = H.headline_table(_summary([clean, noisy]), "ae").splitlines()
    assert lines[0] == ("| Regularization | PSNR clean (val / test) | SSIM clean (val / test) | "
                        "PSNR noisy σ=0.1 (val / test) | SSIM noisy σ=0.1 (val / test) |")
    # the noise-trained run has not converged: the row is marked †; its clean test PSNR (4 dB) is below the mean
    # image's 12.5 dB, so one of the row's two runs is at the mean image, and the row says so
    assert lines[2] == ("| Baseline † (at the mean image: 1 of 2 runs) | 20.00 / 21.00 | 0.5000 / 0.6000 | "
                        "18.00 / 19.00 | 0.4000 / 0.4500 |")
    assert lines[3] == "| *mean image (reference)* | 12.00 / 12.50 | 0.3000 / 0.3100 | — / — | — / — |"
    assert len(lines) == 4


def test_headline_label_says_preview_and_not_converged_where_so():
    def runs(k, n):
        return [_run(0.0, i < k, {"clean": (1.0, 0.1)}, {"clean": (1.0, 0.1)}, seed=i) for i in range(n)]

    line = H.label_line(_summary(runs(3, 4)))
    assert line == ("*synthetic sample (generator src.synthetic v2): 2000 images at 128×128 px · preset `quick` · "
                    "seeds 0, 1, 2, 3 · 20 epochs · cpu (x86_64, 2 cores), torch 2.x · trained 2026-11-28 · "
                    "**preview, not converged** (3 of 4 runs converged). Synthetic faces, not Flickr-Faces.*")
    assert H.status(_summary(runs(4, 4))) == "**preview** (all 4 runs converged)"
    assert H.status(_summary(runs(3, 4), "full")) == "**not converged** (3 of 4 runs converged)"
    assert H.status(_summary(runs(4, 4), "full")) == "all 4 runs converged"


def _titles(monkeypatch) -> dict[str, list[str]]:
    """Patch figures.save to record every text of each figure (by file name) instead of writing a PNG."""
    seen: dict[str, list[str]] = {}

    def record(fig, path):
        seen[Path(path).name] = [t.get_text() for t in fig.findobj(Text) if t.get_text()]
        return Path(path)

    monkeypatch.setattr(F, "save", record)
    return seen


def _edit_summary(runs: Path, name: str, converged: bool) -> None:
    s = json.loads((runs / "summary.json").read_text())
    s["grid"]["preset"]["name"] = name
    for r in s["runs"]:
        r["convergence"]["converged"] = converged
    (runs / "summary.json").write_text(json.dumps(s))


@pytest.mark.parametrize("name, converged, tag", [("smoke", False, "preview: not converged"),
                                                  ("smoke", True, "preview: preset smoke"),
                                                  ("full", True, None)])
def test_figure_titles_say_preview_unless_converged_protocol_runs(smoke_copy, monkeypatch, name, converged, tag):
    from src.report import report

    runs = smoke_copy / "runs"
    if (name, converged) != ("smoke", False):  # the smoke grid's own runs (2 epochs) have not converged
        _edit_summary(runs, name, converged)
    seen = _titles(monkeypatch)
    report(runs, smoke_copy / "F")
    assert len(seen) == 10 and "reconstructions.png" in seen and "rd_psnr.png" in seen
    for figure, texts in seen.items():
        tagged = [t for t in texts if "preview" in t]
        if tag:
            assert any(t.endswith("\n" + tag) for t in texts), (figure, texts[:3])
        else:
            assert not tagged, (figure, tagged)


def test_publish_writes_the_headline_and_docs_results_with_working_links(smoke_copy, monkeypatch):
    monkeypatch.chdir(smoke_copy)
    intro = "# Mine\n\nintro\n\n## Results\n\n<!-- headline:start -->\nOLD\n<!-- headline:end -->\n\n## Use\n\nkept\n"
    (smoke_copy / "README.md").write_text(intro)
    assert main(["report", "runs", "--publish"]) == 0
    readme = (smoke_copy / "README.md").read_text()
    assert readme.startswith("# Mine\n\nintro\n\n## Results\n\n<!-- headline:start -->\n*synthetic sample")
    assert readme.endswith("<!-- headline:end -->\n\n## Use\n\nkept\n") and "OLD" not in readme
    assert "preset `smoke`" in readme and "**preview, not converged** (0 of 16 runs converged)" in readme
    assert readme.count("| Regularization |") == 2 and "](Figures/reconstructions.png)" in readme
    docs = (smoke_copy / "docs" / "results.md").read_text()
    assert docs.startswith("# Results\n") and "<!-- results:start -->" in docs and "| Target bpp |" in docs
    assert "](../Figures/AE_reg_images2.png)" in docs and "](../Figures/rd_psnr.png)" in docs
    report_md = (smoke_copy / "runs" / "REPORT.md").read_text()  # the run folder's copy links its own figures
    assert "](../Figures/AE_reg_images2.png)" in report_md
    assert broken_links([smoke_copy / "README.md", smoke_copy / "docs" / "results.md"]) == []
    assert main(["report", "runs", "--publish"]) == 0  # again: the blocks are replaced, not repeated
    assert (smoke_copy / "docs" / "results.md").read_text().count("<!-- results:start -->") == 1
    assert (smoke_copy / "README.md").read_text().count(H.HEADLINE_MARKERS[0]) == 1


def test_a_preview_is_not_published_over_the_protocol_results(smoke_copy, monkeypatch, capsys):
    monkeypatch.chdir(smoke_copy)
    published = smoke_copy / "results" / "full-synthetic"
    shutil.copytree(smoke_copy / "runs", published)
    _edit_summary(published, "full", True)
    (smoke_copy / "README.md").write_text("# Mine\n")
    assert main(["report", "runs", "--publish"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "results/full-synthetic" in err and "\n" not in err
    assert (smoke_copy / "README.md").read_text() == "# Mine\n" and not (smoke_copy / "docs").exists()
    assert main(["report", "results/full-synthetic", "--publish"]) == 0  # the protocol results themselves
    readme = (smoke_copy / "README.md").read_text()
    assert "preset `full`" in readme and "all 16 runs converged" in readme and "preview" not in readme


def test_reproduce_refuses_to_publish_a_preview_before_training(tmp_path, capsys):
    (tmp_path / "results" / "full-synthetic").mkdir(parents=True)
    (tmp_path / "results" / "full-synthetic" / "summary.json").write_text("{}")
    (tmp_path / "README.md").write_text("# Mine\n")
    code = main(["reproduce", "--preset", "smoke", "--data", str(tmp_path / "no-faces"), "--out", str(tmp_path / "out"),
                 "--readme", str(tmp_path / "README.md"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "full-synthetic" in err and "preview (preset smoke)" in err and "\n" not in err
    assert not (tmp_path / "out").exists() and (tmp_path / "README.md").read_text() == "# Mine\n"
