"""A piece's time budget: the plan's arithmetic (pure functions) and the clock that admits work.

GPU time comes in commands of at most 10 minutes, so a piece of the protocol (one model's 8
runs of one seed, ``reproduce --models ae --seeds 0,``) runs under ``--budget-s S``. Before any
training it prints its plan in one line: runs, training images, image-steps (images x epochs,
plus one evaluation pass) and the time they need at the stated (``--images-per-s``) or measured
rate. While it runs, ``Budget.admit`` is asked before each unit of work (a stack of runs, or
one run) and refuses, in one line, a unit that cannot finish before the budget ends; the rate
it uses is the one measured on the units done so far, else the stated one.

Nothing here imports torch: the arithmetic is checked by hand in tests/test_pieces.py
(8 runs x 200 epochs x 49,000 images = 78.4 M image-steps).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from .utils import UserError


def parse_seeds(text: str) -> tuple[int, ...]:
    """``--seeds``: a count ("3" -> 0, 1, 2) or a list ("1,2"; one seed alone: "2,")."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        if len(parts) == 1:
            n = int(parts[0])
            if n < 1:
                raise ValueError
            return tuple(range(n))
        seeds = tuple(int(p) for p in parts if p)
    except ValueError:
        raise UserError(f"--seeds {text!r}: expected a count such as 3 (seeds 0, 1, 2) or a list such as 1,2 "
                        "(one seed alone: 2,)") from None
    if not seeds or min(seeds) < 0 or len(set(seeds)) < len(seeds):
        raise UserError(f"--seeds {text!r}: seeds must be distinct integers >= 0")
    return seeds


def parse_models(text: str, names: tuple[str, ...]) -> tuple[str, ...]:
    """``--models``: "ae", "vae" or "ae,vae", in the order of ``names``."""
    chosen = {p.strip() for p in str(text).split(",") if p.strip()}
    if not chosen or chosen - set(names):
        raise UserError(f"--models {text!r}: choose from {', '.join(names)} (comma-separated, e.g. ae,vae)")
    return tuple(n for n in names if n in chosen)


def image_steps(runs: int, epochs: int, train_images: int) -> int:
    """Training image-steps: every run sees every training image once per epoch."""
    return runs * epochs * train_images


@dataclass(frozen=True)
class Plan:
    """The work of a piece: ``runs`` runs, each ``epochs`` epochs over ``train_images``, then one
    evaluation pass over ``eval_images`` (val + test, times the conditions)."""
    runs: int
    epochs: int
    train_images: int
    eval_images: int

    @property
    def image_steps(self) -> int:
        return image_steps(self.runs, self.epochs, self.train_images) + self.runs * self.eval_images

    def seconds(self, images_per_s: float) -> float:
        return self.image_steps / images_per_s


def piece_plan(cfgs: list, n_images: int) -> Plan:
    """The ``Plan`` of training the runs ``cfgs`` (``RunConfig``s of one preset) on ``n_images`` images."""
    from .data import split_indices

    if not cfgs:
        return Plan(0, 0, 0, 0)
    data = cfgs[0].data
    sizes = {k: len(v) for k, v in split_indices(n_images, data.split, data.split_seed).items()}
    return Plan(len(cfgs), cfgs[0].train.epochs, sizes["train"], sizes["val"] + sizes["test"])


def trainer_line(cfg, n_images: int, history: list[dict]) -> str:
    """The "trainer:" line of a run trained alone (``fit``): its images/s over its epochs, validation included."""
    train = piece_plan([cfg], n_images).train_images
    seconds = sum(h["seconds"] for h in history)
    rate = f"{train * len(history) / seconds:,.0f} images/s" if seconds else "no epoch timed"
    return f"trainer: one run at a time, 1 {cfg.model.name} run: {rate} over {len(history)} epochs"


def millions(n: float) -> str:
    return f"{n / 1e6:.1f} M" if n >= 1e5 else f"{n:,.0f}"


def clock(seconds: float) -> str:
    """"4 min 21 s" / "37 s"."""
    m, s = divmod(round(seconds), 60)
    return f"{m} min {s} s" if m else f"{s} s"


def plan_line(plan: Plan, images_per_s: float | None, budget_s: float | None) -> str:
    """The one line printed before any training (the rate: stated or measured; None = unknown)."""
    head = (f"plan: {plan.runs} runs x {plan.epochs} epochs x {plan.train_images:,} training images "
            f"= {millions(plan.image_steps)} image-steps (evaluation included)")
    if images_per_s is None:
        need = "; time unknown until the first unit is timed (state it with --images-per-s)"
        return head + need + (f"; budget {budget_s:g} s" if budget_s is not None else "")
    need_s = plan.seconds(images_per_s)
    head += f"; {clock(need_s)} at {images_per_s:,.0f} images/s"
    if budget_s is None:
        return head
    if need_s <= budget_s:
        return head + f"; fits the budget of {budget_s:g} s"
    return head + (f"; OVER the budget of {budget_s:g} s by {clock(need_s - budget_s)}: units that cannot finish "
                   "in time will not be started")


class Budget:
    """Admits units of work while they can finish within ``seconds`` of its creation.

    ``images_per_s``: the stated rate, used until a unit has been timed; afterwards the rate is
    the images of the units done divided by the time since the first was admitted (a unit is
    done when the next one is asked for, or when ``done`` is called). A unit of unknown
    duration (no rate yet) is always admitted. ``seconds`` None: everything is admitted.
    """

    def __init__(self, seconds: float | None, images_per_s: float | None = None,
                 now: Callable[[], float] = time.monotonic) -> None:
        if seconds is not None and not seconds > 0:
            raise UserError(f"--budget-s must be > 0 seconds, got {seconds:g}")
        if images_per_s is not None and not images_per_s > 0:
            raise UserError(f"--images-per-s must be > 0, got {images_per_s:g}")
        self.seconds, self.stated, self.now = seconds, images_per_s, now
        self.t0 = now()
        self.first: float | None = None   # when the first unit was admitted
        self.done_images = 0.0
        self.running = 0.0                # images of the unit admitted last, not yet done
        self.refused: list[str] = []

    @property
    def rate(self) -> float | None:
        """images/s measured on the units done, else the stated one, else None."""
        if self.done_images and self.first is not None and self.now() > self.first:
            return self.done_images / (self.now() - self.first)
        return self.stated

    def left(self) -> float:
        return float("inf") if self.seconds is None else self.seconds - (self.now() - self.t0)

    def done(self) -> None:
        """The unit admitted last has finished (its images count towards the measured rate)."""
        self.done_images, self.running = self.done_images + self.running, 0.0

    def admit(self, images: float, what: str) -> str | None:
        """None if the unit ``what`` of ``images`` image-steps may start, else the one line saying why not."""
        self.done()
        rate, left = self.rate, self.left()
        need = images / rate if rate else 0.0
        if self.seconds is not None and (left <= 0 or need > left):
            self.refused.append(what)
            needs = f"it needs about {clock(need)} at {rate:,.0f} images/s and " if rate else ""
            return (f"budget: not starting {what}: {needs}{clock(max(left, 0))} of the {self.seconds:g} s budget "
                    "are left; run the same command again (a new piece) to do it")
        if self.first is None:
            self.first = self.now()
        self.running = images
        return None
