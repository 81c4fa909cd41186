"""A test helper: counting the host reads (syncs) of tensors made by the project's code."""
from __future__ import annotations


def count_host_reads(monkeypatch) -> dict[str, int]:
    """Count host reads of a tensor (item, tolist, float, bool, int) made from the project's own code:
    returns {"n": count so far}, updated as the test runs."""
    import sys

    import torch

    calls = {"n": 0}
    for name in ("item", "tolist", "__float__", "__bool__", "__int__"):
        orig = getattr(torch.Tensor, name)

        def counted(self, *a, _orig=orig, **k):
            if sys._getframe(1).f_globals.get("__name__", "").startswith("src"):
                calls["n"] += 1
            return _orig(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, counted)
    return calls
