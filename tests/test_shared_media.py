"""The outbox, video jobs and stored images on both engines, and across instances on one PostgreSQL database:
a dead instance's unsent parts and video jobs are taken over by exactly one other, a live one's never; an
image one instance received is read by another. Instances here are ``SharedCluster``s on their own
connections; one "dies" by its heartbeat falling behind the lease, as it does when it is killed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import pytest

from bot.cluster import Cluster, SharedCluster, Solo
from bot.config import ImageTools
from bot.media.blobs import Blobs
from bot.media.images import Images, user_content
from bot.media.jobs import MediaJobs
from bot.outbox import StoredParts
from bot.store import Store
from channels.base import Attachment, AttachmentKind, ChatRef, Inbound
from channels.outbox import Outbox, Part
from providers.openrouter.client import OpenRouterClient
from providers.openrouter.refs import ModelRef
from providers.openrouter.request import ProviderSettings
from providers.openrouter.video import submit_video
from tests.fakes.media import make_png
from tests.fakes.openrouter import VideoPlan
from tests.test_mutation_gaps import Deliveries

LEASE = 300.0  # seconds: no heartbeat happens during a test; an instance dies by its heartbeat being moved back
CHAT = ChatRef("telegram", "42")


@pytest.fixture(params=["sqlite", "postgresql"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path | str]:
    """The database of a test, on each engine: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield tmp_path / "chorus.db"
    else:
        yield request.getfixturevalue("pg_url")


Instance = tuple[Store, Cluster]
Start = Callable[[], Awaitable[Instance]]


@asynccontextmanager
async def starter(where: Path | str) -> AsyncIterator[Start]:
    """Start instances on ``where``: each its own store and cluster (``Solo`` on SQLite, where there is one)."""
    async with AsyncExitStack() as stack:
        async def start() -> Instance:
            store = await Store.open(where)
            stack.push_async_callback(store.close)
            cluster: Cluster = SharedCluster(store.db, LEASE, url=str(where)) if store.db.shared else Solo(LEASE)
            await cluster.start(_nothing)
            stack.push_async_callback(cluster.stop)
            return store, cluster

        yield start


@pytest.fixture
async def instances(where: Path | str) -> AsyncIterator[Start]:
    """Instances on each engine."""
    async with starter(where) as start:
        yield start


@pytest.fixture
async def pg_instances(pg_url: str) -> AsyncIterator[Start]:
    """Instances on PostgreSQL (what only several instances can show)."""
    async with starter(pg_url) as start:
        yield start


async def _nothing(word: str) -> None:
    pass


async def die(instance: Instance) -> None:
    """The instance stops heart-beating long enough to count as dead (on SQLite: nothing; one process)."""
    store, cluster = instance
    if cluster.shared:
        await store.write(lambda tx: tx.execute("UPDATE instances SET heartbeat_at = heartbeat_at - ? WHERE id = ?",
                                                LEASE * 2, cluster.id))


def parts(*texts: str, file: bytes | None = None) -> list[Part]:
    made = [Part(CHAT, {"call": "sendMessage", "text": t}) for t in texts]
    if file is not None:
        made.append(Part(CHAT, {"call": "sendVideo", "filename": "waves.mp4"}, data=file))
    return made


async def test_parts_left_by_a_stopped_run_come_back_in_order_with_their_files(instances, tmp_path):
    first = await instances()
    before = StoredParts(first[0], tmp_path / "a", first[1])
    await before.add(parts("one", "two", file=b"\x00video bytes"))
    await die(first)
    second = await instances()
    after = StoredParts(second[0], tmp_path / ("b" if second[1].shared else "a"), second[1])  # SQLite: one machine
    back = await after.pending("telegram")
    assert [(p.body.get("text"), p.data) for p in back] == [("one", None), ("two", None), (None, b"\x00video bytes")]
    # On SQLite the file sits beside the database (one machine); on PostgreSQL it is in the row, so no
    # instance needs another's disk.
    beside = list((tmp_path / "a" / "outbox").glob("*"))
    assert len(beside) == (0 if second[1].shared else 1)
    await after.done(back)
    assert await second[0].db.fetchval("SELECT COUNT(*) FROM outbox") == 0
    assert list((tmp_path / "a" / "outbox").glob("*")) == []


async def test_a_live_instances_parts_stay_its_own_and_a_dead_ones_go_to_exactly_one(pg_instances, tmp_path):
    a, b, c = await pg_instances(), await pg_instances(), await pg_instances()
    sender = StoredParts(a[0], tmp_path, a[1])
    await sender.add(parts("in flight"))
    takers = [StoredParts(x[0], tmp_path, x[1]) for x in (b, c)]
    assert [await t.pending("telegram") for t in takers] == [[], []]  # a is alive: its part is its own
    await die(a)
    taken = await asyncio.gather(*(t.pending("telegram") for t in takers))
    assert sorted(len(t) for t in taken) == [0, 1]  # one conditional UPDATE: one taker, never both
    assert [p.body["text"] for t in taken for p in t] == ["in flight"]
    assert await takers[0].pending("telegram") == [] and await takers[1].pending("telegram") == []


async def test_the_heartbeat_sweep_hands_a_dead_instances_parts_to_the_outbox_here(pg_instances, tmp_path):
    a, b = await pg_instances(), await pg_instances()
    await StoredParts(a[0], tmp_path, a[1]).add(parts("left behind"))
    here = StoredParts(b[0], tmp_path, b[1])
    adopted: list[str] = []

    async def adopt() -> None:
        adopted.extend(p.body["text"] for p in await here.pending("telegram"))

    here.watch("telegram", adopt)
    await here.sweep()
    assert adopted == []  # a is alive
    await die(a)
    await here.sweep()
    assert adopted == ["left behind"]


async def video_job(llm: OpenRouterClient, jobs: MediaJobs) -> None:
    job = await submit_video(llm, ModelRef.parse("openrouter/google/veo-3.1-fast"), "waves")
    await jobs.submit(CHAT, "m1", job, "openrouter/google/veo-3.1-fast", "waves", timeout=10_000)


async def test_two_pollers_of_one_job_deliver_it_once(instances, fake_openrouter):
    """Two instances tick at the same moment (on SQLite: two pollers of one file): one claims, one delivers."""
    clock = [1000.0]
    (sa, ca), (sb, cb) = await instances(), await instances()
    deliveries = Deliveries()
    async with OpenRouterClient(fake_openrouter.api_key, ProviderSettings(base_url=fake_openrouter.base_url)) as llm:
        a, b = (MediaJobs(s, llm, deliveries, poll_interval=10, clock=lambda: clock[0], cluster=c)
                for s, c in ((sa, ca), (sb, cb)))
        await video_job(llm, a)
        clock[0] += 10
        (seen_a,), (seen_b,) = await a._due(), await b._due()  # both saw it due: the claim decides
        claims = [await a._claim(seen_a), await b._claim(seen_b)]
        assert claims == [True, False]
        await a._unclaim(seen_a)  # as a check that failed: due again as it was
        await asyncio.gather(a.tick(), b.tick())
        await asyncio.gather(a.tick(), b.tick())
    assert [(r.reply_to, [m.filename for m in r.media]) for r in deliveries.sent] == [("m1", ["video-" + next(
        iter(fake_openrouter.videos)) + ".mp4"])]
    assert [v.polls for v in fake_openrouter.videos.values()] == [1]  # polled once: the other tick saw it taken
    assert await a.pending() == 0


async def test_a_job_whose_checker_died_is_checked_again_by_another_instance(pg_instances, fake_openrouter):
    clock = [1000.0]
    (sa, ca), (sb, cb) = await pg_instances(), await pg_instances()
    deliveries = Deliveries()
    async with OpenRouterClient(fake_openrouter.api_key, ProviderSettings(base_url=fake_openrouter.base_url)) as llm:
        a, b = (MediaJobs(s, llm, deliveries, poll_interval=10, clock=lambda: clock[0], cluster=c)
                for s, c in ((sa, ca), (sb, cb)))
        fake_openrouter.video_plan.append(VideoPlan(polls_until_done=1))
        await video_job(llm, a)
        clock[0] += 10
        (due,) = await a._due()
        assert await a._claim(due)  # a starts a check, then dies in the middle of it
        await b.release()
        await b.tick()
        assert deliveries.sent == []  # a is alive: its check is its own, however long it takes
        await die((sa, ca))
        await b.release()  # what the heartbeat sweep runs
        await b.tick()
    assert [r.reply_to for r in deliveries.sent] == ["m1"]
    assert await sb.db.fetchval("SELECT status FROM media_jobs") == "delivered"


async def test_an_image_one_instance_received_is_sent_to_the_model_by_another(instances, tmp_path):
    """History refers to ``chorus-media:in/...``; a later turn on another instance (its own media directory)
    still sends the image (on SQLite, the one instance's file)."""
    (sa, ca), (sb, cb) = await instances(), await instances()
    shared = ca.shared
    a = Images(tmp_path / "a", ImageTools(), Blobs(sa) if shared else None)
    b = Images(tmp_path / ("b" if shared else "a"), ImageTools(), Blobs(sb) if shared else None)
    png = make_png(32, 16)
    inbound = Inbound(CHAT, "7", "Ada", attachments=[Attachment.from_bytes(AttachmentKind.IMAGE, png, filename="x.png")])
    stored = await a.accept(inbound)
    history = [{"role": "user", "content": user_content("what is this?", stored)}]
    (message,) = await b.inline(history)
    url = message["content"][1]["image_url"]["url"]
    assert url.startswith("data:image/png;base64,") and len(url) > 100
    if shared:
        assert await Blobs(sa).sweep(before=0) == 0  # used just now: kept
        assert await Blobs(sa).sweep(before=float("inf")) == 1  # unused past keepDays: gone from the database


async def test_a_dead_instances_part_goes_after_the_one_being_sent_and_before_newer_ones(pg_instances, tmp_path):
    """The outbox here is sending a chat's part, with a newer one waiting, when a dead instance's older part of
    that chat is handed over: it goes next, before the newer one (the part on the wire stays first)."""
    (sa, ca), (sb, cb) = await pg_instances(), await pg_instances()
    await StoredParts(sa, tmp_path, ca).add(parts("older, left by a"))
    here = StoredParts(sb, tmp_path, cb)
    sent: list[str] = []
    on_wire, wire = asyncio.Event(), asyncio.Event()

    async def send(part: Part) -> None:
        if not sent:
            on_wire.set()
            await wire.wait()  # the first part is on the wire until the dead instance's part is adopted
        sent.append(part.body["text"])

    outbox = Outbox("telegram", send, lambda exc: None, store=here)
    await outbox.resume()  # a is alive: nothing to take yet
    delivering = asyncio.create_task(outbox.deliver(parts("newer one", "newer two")))
    await on_wire.wait()
    await die((sa, ca))
    await here.sweep()  # the heartbeat's: hands a's part to this outbox
    wire.set()
    assert await delivering == "sent"
    assert sent == ["newer one", "older, left by a", "newer two"]
    assert await sb.db.fetchval("SELECT COUNT(*) FROM outbox") == 0
