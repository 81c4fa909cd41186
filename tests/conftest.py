"""Only for tests/test_reliability.py: the counters its tests fill, printed as one line at the end."""
import pytest

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
