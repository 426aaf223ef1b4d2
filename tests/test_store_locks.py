"""Concurrent runs on one store: the store's lock files (virnucpro.io.locks) and `embed` taking the
shard's lock and re-checking the store before it loads any model. Deterministic: no test sleeps or races;
each situation (a lock of a dead pid, a live lock released while waiting, a store file present) is
built, and the injected sleep and clock replace waiting."""

import json
import logging
import os
import shutil
import socket
import threading

import pytest

from tests.embed_runs import embed_all, plan, sample
from virnucpro.io import locks
from virnucpro.models import dnabert, esm2
from virnucpro.steps.embed import embed

HOST = socket.gethostname()


def place_lock(path, host=HOST, pid=None, token="theirs", mtime=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"host": host, "pid": os.getpid() if pid is None else pid, "created": 0.0,
                                "token": token}) + "\n")
    if mtime is not None:
        os.utime(path, (mtime, mtime))


def no_sleep(seconds):
    raise AssertionError(f"slept {seconds} s although the lock was free or stale")


def warnings_of(caplog):
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_free_lock_is_taken_and_released(tmp_path):
    path = tmp_path / ".lock-x"
    with locks.hold_lock(path, "shard x", sleep=no_sleep) as token:
        record, _ = locks.read_holder(path)
        assert (record["host"], record["pid"], record["token"]) == (HOST, os.getpid(), token)
    assert not path.exists()


def test_the_lock_of_a_dead_pid_on_this_host_is_taken_over_with_one_line(tmp_path, caplog):
    path = tmp_path / ".lock-x"
    place_lock(path, pid=4_000_000)  # above the kernel's pid_max: no such process
    assert not locks.pid_alive(4_000_000)
    with caplog.at_level(logging.INFO, logger="virnucpro"):
        token = locks.acquire(path, "shard x", sleep=no_sleep)
    assert locks.read_holder(path)[0]["token"] == token
    assert [r.getMessage() for r in caplog.records] == [
        f"shard x: taking over the lock {path} of pid 4000000 on {HOST}: its holder, pid 4000000 on this "
        "host, is gone"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock-x"]  # the stale one renamed aside is gone


def test_a_lock_of_another_host_is_stale_only_when_its_heartbeat_is_old(tmp_path, caplog):
    path = tmp_path / ".lock-x"
    place_lock(path, host="elsewhere", pid=os.getpid(), mtime=1000.0)
    record, mtime = locks.read_holder(path)
    assert locks.stale_reason(record, mtime, now=1000.0 + 600, stale_after_s=600) is None
    assert locks.stale_reason(record, mtime, now=1000.0 + 601, stale_after_s=600) == (
        "its heartbeat is 601 s old (more than 600 s)")
    slept = []

    def sleep(s):  # the heartbeat stops (the holder died): time moves past the timeout
        slept.append(s)
        clock.now += 601

    clock = lambda: clock.now  # noqa: E731
    clock.now = 1000.0
    with caplog.at_level(logging.INFO, logger="virnucpro"):
        locks.acquire(path, "shard x", stale_after_s=600, poll_s=5, sleep=sleep, clock=clock)
    assert slept == [5]
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [f"shard x: waiting for pid {os.getpid()} on elsewhere, which holds its lock {path} "
                     "(polling every 5 s)",
                     f"shard x: taking over the lock {path} of pid {os.getpid()} on elsewhere: its heartbeat "
                     "is 601 s old (more than 600 s)"]
    assert locks.read_holder(path)[0]["host"] == HOST


def test_a_live_lock_is_waited_for_with_bounded_polls(tmp_path, caplog):
    path = tmp_path / ".lock-x"
    place_lock(path)  # held by this very process: alive
    slept = []

    def sleep(s):  # the holder releases its lock during the third poll
        slept.append(s)
        if len(slept) == 3:
            path.unlink()

    with caplog.at_level(logging.INFO, logger="virnucpro"):
        token = locks.acquire(path, "shard x", stale_after_s=8, poll_s=30, sleep=sleep)
    assert slept == [4, 4, 4]  # the poll never waits longer than half the stale timeout
    assert locks.read_holder(path)[0]["token"] == token
    assert [r.getMessage() for r in caplog.records] == [
        f"shard x: waiting for pid {os.getpid()} on {HOST}, which holds its lock {path} (polling every 30 s)"]


def test_a_taker_that_renamed_a_newer_lock_puts_it_back(tmp_path):
    path = tmp_path / ".lock-x"
    place_lock(path, token="newer")
    locks._break(path, {"host": HOST, "pid": 1, "created": 0.0, "token": "judged stale"}, "mine")
    assert locks.read_holder(path)[0]["token"] == "newer"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock-x"]


def test_release_leaves_a_lock_that_is_not_ours(tmp_path):
    path = tmp_path / ".lock-x"
    place_lock(path, token="theirs")
    locks.release(path, "mine")
    assert path.exists()
    locks.release(path, "theirs")
    assert not path.exists()


class Once:
    """An event whose first wait times out (one heartbeat) and whose second returns set."""

    def __init__(self):
        self.calls = 0

    def wait(self, seconds):
        self.calls += 1
        return self.calls > 1


def test_the_heartbeat_refreshes_the_lock_while_it_is_ours(tmp_path, caplog):
    path = tmp_path / ".lock-x"
    place_lock(path, token="mine", mtime=1000.0)
    locks._heartbeat(path, "mine", 30, Once())
    assert path.stat().st_mtime > 1000.0 + 24 * 3600  # now, not 1970
    place_lock(path, token="theirs", mtime=1000.0)
    locks._heartbeat(path, "mine", 30, Once())
    assert path.stat().st_mtime == 1000.0
    assert warnings_of(caplog) == [f"lock {path} is no longer held by this process"]


# ------------------------------------------------------------------------------ embed and its lock


@pytest.fixture
def two_plans(tmp_path, embed_models):
    """Two runs planned the same frames against one store before either embedded: one plan each, the
    same shard names; run A's shards are embedded."""
    frames = sample(tmp_path / "s")
    plan_a, a = plan(tmp_path, embed_models, frames, name="plan_a")
    plan_b, b = plan(tmp_path, embed_models, frames, name="plan_b")
    assert [s["name"] for s in a["shards"]] == [s["name"] for s in b["shards"]] and len(a["shards"]) > 1
    receipts = embed_all(tmp_path, embed_models, plan_a, a["shards"])
    return plan_b, b, receipts


@pytest.fixture
def no_models(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(esm2, "load_converted", refuse)
    monkeypatch.setattr(dnabert, "load_dnabert", refuse)


def store_stamps(receipts):
    return {p: os.stat(p).st_mtime_ns for r in receipts for p in r["store_files"].values()}


def test_a_shard_another_run_embedded_is_not_embedded_again(tmp_path, two_plans, no_models, caplog):
    plan_b, b, receipts_a = two_plans
    before = store_stamps(receipts_a)
    shard = b["shards"][0]["name"]
    receipt = tmp_path / "done_b" / f"{shard}.json"
    with caplog.at_level(logging.INFO, logger="virnucpro"):
        note = embed(plan_b, shard, notes={}, receipt=receipt, lock_options={"sleep": no_sleep})
    assert json.loads(receipt.read_text()) == note
    (a,) = [r for r in receipts_a if r["shard"] == shard]
    assert note["already_stored"] == a["store_files"] and note["store_files"] == a["store_files"]
    assert note["tokens"] == {} and note["seconds"] == {} and note["frames"] == a["frames"]
    assert store_stamps(receipts_a) == before  # nothing written to the store
    assert not list(tmp_path.rglob(".lock-*"))
    assert [r.getMessage() for r in caplog.records] == [
        f"shard {shard}: {a['frames']['esm2']} esm2, {a['frames']['dnabert_s']} dnabert_s already in the store "
        f"(another run embedded them): {a['store_files']['esm2']}, {a['store_files']['dnabert_s']}"]


def test_a_shard_being_embedded_is_waited_for_then_found_stored(tmp_path, two_plans, no_models, caplog):
    """Run B's job finds run A's lock on the shard (A is embedding it): it waits; A writes the store
    files and releases its lock; B then finds them and embeds nothing."""
    plan_b, b, receipts_a = two_plans
    shard = b["shards"][1]["name"]
    (a,) = [r for r in receipts_a if r["shard"] == shard]
    held = {p: tmp_path / f"held-{i}" for i, p in enumerate(a["store_files"].values())}
    for final, aside in held.items():
        shutil.move(final, aside)  # A has not written them yet
    lock = (tmp_path / "store" / os.path.basename(os.path.dirname(a["store_files"]["esm2"])) / f".lock-{shard}")
    place_lock(lock, token="run A")

    def a_finishes(seconds):
        for final, aside in held.items():
            shutil.move(aside, final)
        lock.unlink()

    with caplog.at_level(logging.INFO, logger="virnucpro"):
        note = embed(plan_b, shard, notes={}, receipt=tmp_path / "b.json",
                           lock_options={"sleep": a_finishes, "poll_s": 2})
    assert note["already_stored"] == a["store_files"]
    assert [r.getMessage() for r in caplog.records][0] == (
        f"shard {shard}: waiting for pid {os.getpid()} on {HOST}, which holds its lock {lock} (polling every 2 s)")


def test_a_shard_missing_from_the_store_is_embedded_under_its_lock(tmp_path, two_plans, embed_models, caplog):
    """A dead run's lock is taken over (one line); the shard's store files are gone (never written), so
    it is embedded, and the receipt says nothing was already stored."""
    plan_b, b, receipts_a = two_plans
    shard = b["shards"][0]["name"]
    (a,) = [r for r in receipts_a if r["shard"] == shard]
    for path in a["store_files"].values():
        os.unlink(path)
    lock = (tmp_path / "store" / os.path.basename(os.path.dirname(a["store_files"]["esm2"])) / f".lock-{shard}")
    place_lock(lock, pid=4_000_000)
    seen = []

    def sleep(s):
        seen.append(s)

    with caplog.at_level(logging.INFO, logger="virnucpro"):
        receipts_b = embed_all(tmp_path / "b", embed_models, plan_b, [s for s in b["shards"] if s["name"] == shard])
    (note,) = receipts_b
    assert note["already_stored"] == {} and note["store_files"] == a["store_files"]
    assert note["tokens"] == a["tokens"] and seen == []
    assert [m for m in warnings_of(caplog)] == [
        f"shard {shard}: taking over the lock {lock} of pid 4000000 on {HOST}: its holder, pid 4000000 on "
        "this host, is gone"]
    assert not lock.exists()


def test_the_lock_is_held_while_the_shard_is_embedded(tmp_path, two_plans, monkeypatch):
    """While embed embeds, its lock file exists and names this process; afterwards it is gone."""
    plan_b, b, receipts_a = two_plans
    shard = b["shards"][0]["name"]
    (a,) = [r for r in receipts_a if r["shard"] == shard]
    for path in a["store_files"].values():
        os.unlink(path)
    seen = {}

    def fake_embed(plan, shard_, todo, *args):
        seen["holder"] = [locks.read_holder(p)[0] for p in (tmp_path / "store").rglob(f".lock-{shard}")]
        seen["threads"] = threading.active_count()
        return {"device": "cpu", "gpu": None, "tokens": {}, "seconds": {"embed": 0.0}, "store_files": {}}

    import virnucpro.steps.embed as step

    monkeypatch.setattr(step, "_embed", fake_embed)
    step.embed(plan_b, shard, notes={}, receipt=tmp_path / "b.json")
    assert [(h["host"], h["pid"]) for h in seen["holder"]] == [(HOST, os.getpid())]
    assert not list((tmp_path / "store").rglob(".lock-*"))
