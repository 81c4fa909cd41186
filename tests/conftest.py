"""Shared by the suite: the one rule for the ``slow`` marker, the one finished smoke grid, and the
counters tests/test_reliability.py fills (printed as one line at the end)."""
import json
import shutil
import time

import pytest


def pytest_collection_finish(session) -> None:
    """If a collected test uses the smoke grid (every ``forked_cli.Proc`` user does), start the forkserver of
    ``forked_cli`` now: it imports torch and ``src`` in the background while the first tests run, and it is
    started before anything else (src.data's decode pool) could start a forkserver without them."""
    if any("smoke_grid" in getattr(item, "fixturenames", ()) for item in session.items):
        import forked_cli

        forked_cli.start()


def pytest_collection_modifyitems(config, items) -> None:
    """``@pytest.mark.slow`` tests run only when ``-m`` names the marker (``pytest -m slow``)."""
    if "slow" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="slow variant: run with `pytest -m slow`")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def smoke_grid(tmp_path_factory):
    """One finished ``reproduce --preset smoke`` for the whole session, to READ only: ROOT/faces (60
    generated faces), ROOT/runs (the grid, its rd/ curves and figure_data.npz), ROOT/Figures,
    ROOT/README.md with its headline block replaced and ROOT/docs/results.md (published), ROOT/data/.cache (the decoded images; ROOT was the
    working folder) and ROOT/reproduce_log.json (its stdout lines with the second each arrived, its stderr
    lines, and the total). It runs as its own process with one torch thread (``forked_cli``), as a user's would; a test
    that writes uses ``smoke_copy``."""
    from forked_cli import Proc

    from src.sample import write_sample

    root = tmp_path_factory.mktemp("smoke")
    write_sample(root / "faces", n=60, seed=0, progress=False)
    readme = root / "README.md"
    readme.write_text("# Title\n\nintro\n\n<!-- headline:start -->\nold\n<!-- headline:end -->\n\n## After\n")
    proc = Proc(["reproduce", "--preset", "smoke", "--device", "cpu", "--data", root / "faces", "--out", root / "runs",
                 "--figures", root / "Figures", "--readme", readme, "--keep-last"],  # last.pt: damaged by test_reliability
                cwd=root)  # stdout and stderr to files, as a user's log: no bars
    assert proc.wait() == 0, proc.err[-10:]
    log = {"lines": proc.out, "stderr": proc.err, "seconds": time.monotonic() - proc.t0}
    (root / "reproduce_log.json").write_text(json.dumps(log))
    return root


@pytest.fixture
def smoke_copy(smoke_grid, tmp_path):
    """TMP/runs: a private copy of the smoke grid's results (file times kept, so nothing looks stale);
    its runs still point at ``smoke_grid / "faces"``."""
    shutil.copytree(smoke_grid / "runs", tmp_path / "runs", ignore=shutil.ignore_patterns(".lock"))
    return tmp_path


RELIABILITY = {"kills": 0, "corrupted": 0, "failed_writes": 0, "other_faults": 0,
               "bad_inputs": 0, "bad_args": 0, "intact": 0}


@pytest.fixture(scope="session")
def reliability() -> dict:
    """Counters a reliability test increments for each fault, bad input or bad argument it really tried."""
    return RELIABILITY


def pytest_terminal_summary(terminalreporter) -> None:
    r = RELIABILITY
    if not any(r.values()):
        return
    bad = [rep for key in ("failed", "error") for rep in terminalreporter.stats.get(key, [])
           if "test_reliability" in getattr(rep, "nodeid", "")]
    faults = r["kills"] + r["corrupted"] + r["failed_writes"] + r["other_faults"]
    verdict = (f"nothing lost ({r['intact']} checks that earlier results stayed intact or came back identical)"
               if not bad else f"{len(bad)} reliability test(s) FAILED, see above")
    terminalreporter.write_line(
        f"reliability: {faults} faults injected ({r['kills']} SIGKILLs, {r['corrupted']} corrupted files, "
        f"{r['failed_writes']} failed writes, {r['other_faults']} divergences/concurrent writers), "
        f"{r['bad_inputs']} bad inputs tried, {r['bad_args']} bad arguments tried; {verdict}")
