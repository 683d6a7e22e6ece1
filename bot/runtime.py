"""Wiring: what the service is made of, built from the config and closed together."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping
from contextlib import contextmanager, suppress
from functools import partial
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from channels.base import Channel, InboundHandler
from channels.console import ConsoleChannel
from net.http import Proxy, choose_proxy
from providers.openrouter.client import OpenRouterClient
from providers.openrouter.request import ProviderSettings
from providers.openrouter.retry import RetryPolicy

from .agent import Agent
from .cluster import Cluster, SharedCluster, Solo
from .cron.jobs import CronJobs
from .cron.runner import CronRunner, as_turns
from .cron.tool import CronTool
from .dispatch import Dispatcher
from .leases import leases_of
from .media.blobs import Blobs
from .media.images import Images
from .media.jobs import MediaJobs
from .media.tools import media_tools
from .tools import ToolRegistry
from .media.voice import Voice
from .outbox import StoredParts
from .auth import Credential, resolve_key
from .catalog import Catalog
from .kept import KeptValues
from .channel_settings import discord_settings, telegram_settings
from .config import ChorusConfig, ConfigError, LoadedConfig, load_config, load_dotenv, state_dir
from .db.base import DB_ERRORS
from .store import KEEP_ANSWERED_DAYS, Inbox, Store, is_database_url

GC_YOUNG_THRESHOLD = 100_000  # net allocations of containers between two young collections (CPython: 700)
QUIET_COLLECT_EVERY = 300.0  # seconds: how often a quiet service checks whether the collector ran at all

log = logging.getLogger("chorus")


@dataclass(slots=True)
class Env:
    """The process environment as Chorus sees it: variables, ``.env`` values and the state directory."""

    vars: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    dotenv: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls) -> Env:
        env = dict(os.environ)
        dotenv: dict[str, str] = {}
        for path in (state_dir(env) / ".env", Path.cwd() / ".env"):  # the project's .env wins over the state dir's
            if path.is_file():
                dotenv.update(load_dotenv(path))
        return cls(env, dotenv)

    @property
    def state(self) -> Path:
        return state_dir(self.vars)

    def lookup(self, name: str, config: ChorusConfig) -> str | None:
        """``name`` from the environment, else the config's ``env`` block, else ``.env`` (the API key's order)."""
        return (self.vars.get(name) or config.env.get(name) or self.dotenv.get(name) or "").strip() or None

    def database(self, config: ChorusConfig) -> Path | str:
        """Where the state is: ``storage.url``, else ``CHORUS_DATABASE_URL`` (PostgreSQL), else the SQLite file
        in the state directory."""
        url = config.storage.url.get_secret_value() if config.storage.url else self.lookup("CHORUS_DATABASE_URL", config)
        if url and not is_database_url(url):
            raise ConfigError("CHORUS_DATABASE_URL is a PostgreSQL URL: postgresql://user:password@host:5432/database")
        return url or self.state / "chorus.db"

    def credential(self, config: ChorusConfig) -> Credential | None:
        """The OpenRouter key in precedence order (see ``bot.auth.resolve_key``)."""
        key = config.models.providers.openrouter.api_key
        return resolve_key(key.get_secret_value() if key else None, self.state, self.vars, config.env, self.dotenv)


def provider_settings(config: ChorusConfig) -> ProviderSettings:
    """The provider's plain-data view of the config."""
    openrouter = config.models.providers.openrouter
    return ProviderSettings(
        base_url=openrouter.base_url,
        provider_params=dict(openrouter.params.provider),
        model_params={ref: dict(entry.params) for ref, entry in config.agents.defaults.models.items()},
    )


def make_client(config: ChorusConfig, credential: Credential | None) -> OpenRouterClient:
    """The one OpenRouter client of this process (keyless only for the public catalog)."""
    openrouter = config.models.providers.openrouter
    return OpenRouterClient(
        credential.key if credential else None, provider_settings(config), proxy=openrouter_proxy(config),
        timeout=openrouter.timeout_ms / 1000, first_byte_timeout=openrouter.first_byte_timeout_ms / 1000,
        idle_timeout=openrouter.idle_timeout_ms / 1000,
        retry=RetryPolicy(attempts=openrouter.max_retries + 1, budget=openrouter.retry_budget_ms / 1000),
    )


def cluster_of(store: Store, config: ChorusConfig) -> Cluster:
    """This instance among the others on a shared (PostgreSQL) database; alone on SQLite."""
    lease = config.storage.lease_ms / 1000
    if store.db.shared:
        return SharedCluster(store.db, lease, url=store.db.url)  # type: ignore[attr-defined]
    return Solo(lease)


def openrouter_proxy(config: ChorusConfig) -> Proxy | None:
    """``models.providers.openrouter.proxy``, else the environment's proxy for the base URL."""
    openrouter = config.models.providers.openrouter
    return choose_proxy(openrouter.proxy, openrouter.base_url, key="models.providers.openrouter.proxy")


@dataclass(slots=True)
class Runtime:
    """The store, the model client and the agent: opened once, closed once."""

    config: ChorusConfig
    state: Path
    store: Store
    llm: OpenRouterClient
    agent: Agent
    dispatcher: Dispatcher
    jobs: MediaJobs
    cron: CronRunner
    parts: StoredParts  # the channels' unsent parts of answers
    cluster: Cluster  # the other instances on a shared database (``Solo`` on SQLite)

    @classmethod
    async def open(cls, loaded: LoadedConfig, env: Env, credential: Credential) -> Runtime:
        store = await Store.open(env.database(loaded.config))
        llm = make_client(loaded.config, credential)
        config = loaded.config
        tools = ToolRegistry()
        agent = Agent(config, store, llm, tools, catalog=Catalog(llm, store.db), voice=Voice(config, llm),
                      images=Images(env.state / "media", config.tools.media.image,
                                    blobs=Blobs(store) if store.db.shared else None))
        cluster = cluster_of(store, config)
        dispatcher = Dispatcher(agent, Inbox(store), cluster=cluster)
        video = config.agents.defaults.video_generation_model
        jobs = MediaJobs(store, llm, dispatcher.deliver, poll_interval=video.poll_interval_ms / 1000, cluster=cluster)
        tools.add(*media_tools(config, llm, jobs))
        cron_jobs = CronJobs(store)
        cron = CronRunner(cron_jobs, as_turns(dispatcher.run_scheduled), lambda: set(dispatcher.channels),
                          grace=config.cron.misfire_grace_ms / 1000)
        if config.cron.enabled:
            tools.add(CronTool(cron_jobs, config, dispatcher.access, cron.wake))
        return cls(config, env.state, store, llm, agent, dispatcher, jobs, cron,
                   StoredParts(store, env.state / "media", cluster), cluster)

    async def close(self) -> None:
        await self.llm.aclose()
        await self.store.close()

    def channels(self, stdin: TextIO | None = None, stdout: TextIO | None = None, *, console: bool = False,
                 env: Env | None = None) -> list[Channel]:
        """The configured channels (Telegram when it has a token); the console when none is, or when asked."""
        found: list[Channel] = []
        env = env or Env()
        if (telegram := telegram_settings(self.config, env.lookup)) is not None:
            from channels.telegram.channel import TelegramChannel  # loaded only when configured

            found.append(TelegramChannel(telegram, parts=self.parts, leases=leases_of(self.cluster, self.store.db)))
        if (discord := discord_settings(self.config, env.lookup)) is not None:
            from channels.discord.channel import DiscordChannel  # discord.py costs ~30 MB of memory: only when used

            found.append(DiscordChannel(discord, parts=self.parts, leases=leases_of(self.cluster, self.store.db),
                                        kept=KeptValues(self.store.db)))
        if console or not found:
            found.append(ConsoleChannel(self.state / "media", stdin=stdin, stdout=stdout))
        return found

    async def serve(self, channels: list[Channel], watch: Coroutine[Any, Any, None] | None = None) -> list[str]:
        """Answer what the last run left pending, then run every channel until all end
        (console: /quit or end of input) or a signal stops them; queued turns finish first.
        Returns why channels gave up for good (a refused token), each also logged when it happens."""
        loop = asyncio.get_running_loop()
        log.debug("event loop: %s", type(loop).__module__.partition(".")[0])  # uvloop where installed
        self.dispatcher.channels.update({ch.name: ch for ch in channels})
        self.llm.warm_up()
        # What start-up built (modules, pydantic schemas: ~100,000 objects and more) lives as long as
        # the process; a full collection still scanned it all, stopping the loop 60-200 ms: the p99 of a turn.
        # Frozen, the collector only ever looks at what was made since.
        gc.freeze()
        # Turns in flight hold ~100 live containers each, freed by reference counting when the turn ends,
        # almost never in cycles. At the default threshold (700) every young collection found them alive
        # and moved them on, so the older ones kept rescanning them: at 1,000 chats 2,100 collections in
        # 20 s, 3.8 s of the loop's time, pauses to 220 ms. Collecting young objects every 100,000 net
        # allocations instead costs two collections of 20-70 ms, and the same peak memory.
        gc.set_threshold(GC_YOUNG_THRESHOLD, 10, 10)
        await self.cluster.start(self.dispatcher.heard)
        if isinstance(self.cluster, SharedCluster):
            self.cluster.on_beat += [self.dispatcher.sweep, self.parts.sweep, self.jobs.release]
        await self.dispatcher.recover()
        await self.jobs.start()
        if self.config.cron.enabled:
            await self.cron.start()
        background = [asyncio.create_task(self._sweep()), asyncio.create_task(_collect_when_quiet()),
                      asyncio.create_task(self.dispatcher.watch_approvals())]
        if watch is not None:  # the config file, watched for changes
            background.append(asyncio.create_task(watch))

        serving = asyncio.current_task()

        def stop() -> None:
            for ch in channels:
                loop.create_task(ch.stop())
            if serving is not None:
                serving.cancel()  # wherever it is: reading channels or draining the last turns

        tasks = [asyncio.create_task(supervised(ch, partial(self.dispatcher.accept, channel=ch)), name=f"channel:{ch.name}")
                 for ch in channels]
        refusals: list[str] = []
        try:
            with _on_signals(loop, stop):
                for task in asyncio.as_completed(tasks):
                    if reason := await task:
                        log.error("%s", reason)  # the others go on: one channel's failure stops only that channel
                        refusals.append(reason)
                await self.dispatcher.drain()
            if waiting := await self.jobs.pending():
                log.warning("%d video(s) still being made; they are delivered %s", waiting,
                            "by a running instance, or the next time one starts" if self.cluster.shared
                            else "the next time Chorus runs")
        except asyncio.CancelledError:
            log.info("stopping")
            refusals.clear()  # stopped while a channel still ran: not a failure (exit 1 only when none is left)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            # Before the turns are cut: a scheduled run cut off here gives its firing back (fires at next start);
            # cut by the dispatcher first, it would count as a failed run and wait out a back-off.
            await self.cron.stop()
            await self.dispatcher.shutdown()
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            await self.cron.stop()
            await self.jobs.stop()
            await self.cluster.stop()
        return refusals

    async def watch_config(self, loaded: LoadedConfig, env: Env, every: float = 1.0) -> None:
        """Reload the config file when it changes: access lists, models, messages and agent settings count
        from the next message on; a change that needs a restart (channels' connection, the provider) says so.
        A config that does not validate is refused with its problems, and the running one stays."""
        path = loaded.path
        seen = _mtime(path)
        while True:
            await asyncio.sleep(every)
            if (now := _mtime(path)) == seen:
                continue
            seen = now
            try:
                fresh = load_config(path, env={**env.dotenv, **env.vars}).config
            except ConfigError as exc:
                log.warning("the changed config was not taken (the running one stays):\n%s", exc)
                continue
            self.reload(fresh)

    def reload(self, fresh: ChorusConfig) -> None:
        """Use ``fresh`` from the next message on; log what changed and what needs a restart."""
        old = self.config
        changed = [key for key in type(fresh).model_fields if getattr(old, key) != getattr(fresh, key)]
        if not changed:
            return
        self.config = self.agent.config = self.dispatcher.access.config = fresh
        if self.agent.voice is not None:
            self.agent.voice.config = fresh
        log.info("config reloaded: %s changed", ", ".join(changed))
        if restart := needs_restart(old, fresh):
            log.warning("the change to %s takes effect after a restart of Chorus (the rest applies now)",
                        ", ".join(restart))

    async def _sweep(self) -> None:
        """At start, then daily: delete stored images unused for ``tools.media.image.keepDays`` (files, and the
        database's copies on a shared database), and inbox rows
        answered more than a week ago."""
        while True:
            try:
                if removed := await asyncio.to_thread(self.agent.images.sweep):
                    log.info("deleted %d stored image(s) unused for %d days", removed, self.agent.images.settings.keep_days)
                images = self.agent.images
                if images.blobs is not None and images.settings.keep_days:
                    if removed := await images.blobs.sweep(time.time() - images.settings.keep_days * 86400):
                        log.info("deleted %d image(s) unused for %d days from the database", removed,
                                 images.settings.keep_days)
            except (OSError, *DB_ERRORS) as exc:
                log.warning("could not clean up stored images: %s", exc)
            try:
                if removed := await self.dispatcher.inbox.prune():
                    log.info("forgot %d inbox message(s) answered over %d days ago", removed, KEEP_ANSWERED_DAYS)
            except DB_ERRORS as exc:
                log.warning("could not prune the inbox: %s", exc)
            await asyncio.sleep(86400)


async def supervised(channel: Channel, accept: InboundHandler) -> str | None:
    """``channel.run``, whatever it raises: an unexpected error ends only this channel (the others go on), and
    comes back as the one line that says so, like a refused token's (the traceback goes to the debug log)."""
    try:
        return await channel.run(accept)
    except Exception as exc:
        log.debug("the %s channel failed", channel.name, exc_info=True)
        return (f"the {channel.name} channel stopped on an unexpected error ({type(exc).__name__}: {str(exc)[:200]}); "
                f"the other channels go on. Run `chorus doctor`, fix what it reports and restart; if it passes, "
                f"this is a Chorus bug worth reporting")


async def _collect_when_quiet() -> None:
    seen = gc.get_stats()[0]["collections"]
    while True:
        await asyncio.sleep(QUIET_COLLECT_EVERY)
        seen = collect_if_quiet(seen)


def collect_if_quiet(seen: int) -> int:
    """Collect the young and middle generations if no young collection ran since the count was ``seen``;
    returns the count now. A quiet bot allocates too slowly to reach ``GC_YOUNG_THRESHOLD`` for days, and
    garbage in cycles (an error's traceback holding a download) would wait that long; a busy one collects
    by itself, and is not paused here."""
    if gc.get_stats()[0]["collections"] == seen:
        gc.collect(1)
    return gc.get_stats()[0]["collections"]


ACCESS_KEYS = {"dm_policy", "allow_from", "group_policy", "group_allow_from"}  # read per message: apply at once


def needs_restart(old: ChorusConfig, fresh: ChorusConfig) -> list[str]:
    """The changed parts that were built into something at start: a channel's connection and its settings
    other than the access lists, the provider, the media tools."""
    changed = [f"channels.{name}" for name in type(fresh.channels).model_fields
               if getattr(old.channels, name).model_dump(exclude=ACCESS_KEYS)
               != getattr(fresh.channels, name).model_dump(exclude=ACCESS_KEYS)]
    return changed + [key for key in ("models", "tools") if getattr(old, key) != getattr(fresh, key)]


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


@contextmanager
def _on_signals(loop: asyncio.AbstractEventLoop, handler: Callable[[], None]) -> Iterator[None]:
    """SIGINT and SIGTERM call ``handler`` inside the block (where the loop can take signals at all)."""
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with suppress(NotImplementedError, RuntimeError):  # not the main thread (tests), or Windows
            loop.add_signal_handler(sig, handler)
            installed.append(sig)
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
