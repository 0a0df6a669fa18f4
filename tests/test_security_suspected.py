"""Issue 10 item 11, the suspected weaknesses: dataset details computed within bounds for anyone
who browses, and duplicate pending requests sent at the same instant (on PostgreSQL too). The
third, reclassification upward with live grants, is in test_governance_unit.py.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest
from hubutil import Hub
from secutil import hub_user

from jupyterhub_dataaccess.service.details import DetailsCache


def test_details_are_computed_once_for_many_callers_and_at_most_n_at_once():
    """When 20 callers ask for the details of 3 datasets at once, Then each is computed once,
    never more than 2 at a time; a reloaded catalogue entry is computed afresh; errors are
    not kept."""
    running, peak, calls = [0], [0], []
    lock = threading.Lock()

    def compute(ds):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
            calls.append(ds.id)
        time.sleep(0.2)
        with lock:
            running[0] -= 1
        if ds.id == "bad":
            raise OSError("source down")
        return f"info of {ds.id}"

    async def scenario():
        pool = ThreadPoolExecutor(8)

        async def run(fn, *args):
            return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)

        cache = DetailsCache(ttl=60, concurrency=2, run=run)
        sets = [SimpleNamespace(id=f"ds{i}") for i in range(3)]
        answers = await asyncio.gather(*(cache.get(sets[i % 3], compute) for i in range(20)))
        assert answers == [f"info of ds{i % 3}" for i in range(20)]
        assert sorted(calls) == ["ds0", "ds1", "ds2"] and peak[0] == 2
        await cache.get(sets[0], compute)
        assert len(calls) == 3  # reused
        await cache.get(SimpleNamespace(id="ds0"), compute)  # the catalogue was reloaded
        assert len(calls) == 4
        bad = SimpleNamespace(id="bad")
        for _ in range(2):
            try:
                await cache.get(bad, compute)
            except OSError:
                pass
        assert calls.count("bad") == 2
        pool.shutdown()

    asyncio.run(scenario())


@pytest.mark.once  # the details cache, not the database
def test_many_callers_opening_a_dataset_page_at_once_all_get_their_details(hub: Hub):
    with ThreadPoolExecutor(10) as pool:
        pages = list(pool.map(lambda _: hub.call("nobody", "GET", "/datasets/sales"), range(30)))
    assert {p.status_code for p in pages} == {200}
    assert {p.json()["rows"] for p in pages} == {5000}


def test_the_same_request_sent_many_times_at_one_instant_makes_one_pending_request(hub: Hub):
    """When a user sends the same request ten times at the same instant (a review-tier
    dataset), Then exactly one is created (201, pending) and the others are 409 carrying it;
    the database holds one pending request (a unique index, so on PostgreSQL too)."""
    with hub_user(hub) as user:
        hub.token(user)
        barrier = threading.Barrier(10)

        def send(_):
            barrier.wait()
            return hub.call(user, "POST", "/requests", json={
                "dataset": "penguins-masked", "justification": "at one instant"})

        with ThreadPoolExecutor(10) as pool:
            answers = list(pool.map(send, range(10)))
        assert sorted(a.status_code for a in answers) == [201] + [409] * 9, \
            [a.text for a in answers]
        (created,) = [a.json() for a in answers if a.status_code == 201]
        for a in answers:
            if a.status_code == 409:
                body = a.json()
                assert body["message"] == "You already have a pending request for this dataset"
                assert body["request"]["id"] == created["id"]
        mine = hub.call(user, "GET", "/requests", params={"status": "pending"}).json()
        assert [r["id"] for r in mine["items"]] == [created["id"]]
