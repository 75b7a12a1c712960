"""Durable runs: each run is a pgtask task in Postgres, so another process goes on with it after a crash.

pgtask (through the harness's `PGTaskDurability`) saves every finished model request and tool call of a
run as a step; when the process running it dies, its lease lapses and a worker of another process claims
the task again, and the run starts over with the saved steps' results instead of redoing them. The
workspace's files are written through to a table as the tools write them, so the run that goes on finds
them. What the run streamed goes on in the same event log: see `RunRegistry` for how a takeover voids
the interrupted step's events (`run_resumed`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

from pydantic_ai.agent import EventStreamHandler
from pydantic_ai.capabilities import AbstractCapability

__all__ = ("DURABLE_ENV_VAR", "DurableRuns")

logger = logging.getLogger("pydantic_deep.server")

DURABLE_ENV_VAR = "PYDANTIC_DEEP_DURABLE"

QUEUE = "pydantic_deep_runs"
_TASK = "run"
_SCHEMA = "pydantic_deep"

RunHandler = Callable[[str, dict[str, Any], int], Awaitable[None]]
"""What a worker does with a claimed run: (run id, what `submit` was given, attempt number)."""


class DurableRuns:
    """A run queue in Postgres (pgtask) that this process both feeds and works on, and the runs' files.

    `lease_seconds` is how long a claimed run stays with a process that stopped renewing it (its worker's
    lease): a crashed process's runs are taken over at most about `lease_seconds + poll_seconds` later.
    """

    def __init__(
        self,
        url: str,
        *,
        concurrency: int,
        lease_seconds: float = 10.0,
        poll_seconds: float = 2.0,
        max_attempts: int = 5,
        queue: str = QUEUE,
        shutdown_grace: float = 30.0,
        work: bool = True,
    ) -> None:
        if not url.startswith(("postgresql://", "postgres://")):
            raise ValueError(f"durable mode needs a PostgreSQL URL (postgresql://...), got {url!r}")
        self.url = url
        self.concurrency = concurrency
        self.lease_seconds = lease_seconds
        self.poll_seconds = poll_seconds
        self.max_attempts = max_attempts
        self.queue = queue
        self.shutdown_grace = shutdown_grace
        self.work = work
        """Whether this process runs queued runs (`False`: it only queues them and serves their streams)."""
        self._client: Any = None
        self._worker: Any = None
        self._worker_task: asyncio.Task[None] | None = None
        self._db: Any = None
        self._db_lock = asyncio.Lock()

    async def check(self) -> None:
        """Connect once, to fail at start (not at the first run) when Postgres cannot be reached."""
        from psycopg import AsyncConnection

        connection = await AsyncConnection.connect(self.url, connect_timeout=5)
        await connection.close()

    async def open(self, handler: RunHandler) -> None:
        """Connect, create the tables (pgtask's and ours) if missing, and start working on the queue."""
        try:
            from pgtask import Client, Task, TaskRegistry, Worker
            from psycopg import AsyncConnection
        except ImportError as exc:  # pragma: no cover - the `durable` extra is missing
            raise RuntimeError('durable mode needs pgtask: pip install "pydantic-deep[durable]"') from exc
        self._client = await Client.connect(self.url)
        await self._client.migrate()
        self._db = await AsyncConnection.connect(self.url, autocommit=True)
        async with self._db.transaction():  # processes starting together create the tables once
            await self._db.execute("SELECT pg_advisory_xact_lock(hashtext('pydantic_deep.schema'))")
            await self._db.execute(f"CREATE SCHEMA IF NOT EXISTS {_SCHEMA}")
            await self._db.execute(
                f"CREATE TABLE IF NOT EXISTS {_SCHEMA}.runs (run_id text PRIMARY KEY, task_id text NOT NULL,"
                " cancel_requested boolean NOT NULL DEFAULT false, created_at timestamptz NOT NULL DEFAULT now())"
            )
            await self._db.execute(
                f"CREATE TABLE IF NOT EXISTS {_SCHEMA}.files (run_id text NOT NULL, path text NOT NULL,"
                " content bytea, PRIMARY KEY (run_id, path))"
            )
        if not self.work:
            return
        registry = TaskRegistry(queue_name=self.queue)

        @registry.task(_TASK, retry_delay=0.5)
        async def run(task: Task, payload: dict[str, Any]) -> None:
            await handler(str(payload["run_id"]), payload, task.attempt)

        self._worker = Worker(
            self.url,
            registry,
            concurrency=self.concurrency,
            poll_interval=self.poll_seconds,
            lease_duration=self.lease_seconds,
            # A shutdown lets running runs finish this long, then hands them back to the queue (`release`).
            shutdown_grace=self.shutdown_grace,
        )
        self._worker_task = asyncio.create_task(self._worker.run(), name="pydantic-deep durable worker")

    def capability(self, live: EventStreamHandler[Any], agent_name: str | None) -> AbstractCapability[Any]:
        """This run's durable execution: pgtask steps, with model events handed to `live` as they stream."""
        from pydantic_ai_harness.pgtask import PGTaskDurability

        return PGTaskDurability(name=agent_name or "agent", event_stream_handler=live)

    async def submit(self, run_id: str, payload: dict[str, Any]) -> None:
        """Queue the run (once: a second submit of the same run id changes nothing)."""
        from pgtask import EnqueueRequest

        request = EnqueueRequest[None](
            task_name=_TASK,
            payload={**payload, "run_id": run_id},
            queue_name=self.queue,
            max_attempts=self.max_attempts,
            idempotency_key=f"pydantic-deep-run:{run_id}",
        )
        handle = await self._client.enqueue(request)
        async with self._db_lock:
            await self._db.execute(
                f"INSERT INTO {_SCHEMA}.runs (run_id, task_id) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                (run_id, handle.id),
            )

    async def state(self, run_id: str) -> str | None:
        """The run's task state in the queue (`pending`, `running`, `succeeded`, `failed`, `cancelled`), if known."""
        task_id = await self._task_id(run_id)
        if task_id is None:
            return None
        result = await self._client.task_result(task_id)
        return None if result is None else str(result.state)

    async def cancel(self, run_id: str) -> bool:
        """Take the run off the queue for good (no process will run it again); whether it was still there."""
        task_id = await self._task_id(run_id)
        return task_id is not None and bool(await self._client.cancel(task_id))

    async def request_cancel(self, run_id: str) -> None:
        """Remember that the run was cancelled, so a process that takes it over ends it instead of going on."""
        async with self._db_lock:
            await self._db.execute(f"UPDATE {_SCHEMA}.runs SET cancel_requested = true WHERE run_id = %s", (run_id,))

    async def cancel_requested(self, run_id: str) -> bool:
        async with self._db_lock:
            cursor = await self._db.execute(f"SELECT cancel_requested FROM {_SCHEMA}.runs WHERE run_id = %s", (run_id,))
            row = await cursor.fetchone()
        return bool(row and row[0])

    async def _task_id(self, run_id: str) -> str | None:
        async with self._db_lock:
            cursor = await self._db.execute(f"SELECT task_id FROM {_SCHEMA}.runs WHERE run_id = %s", (run_id,))
            row = await cursor.fetchone()
        return None if row is None else cast(str, row[0])

    # ---- the runs' files -------------------------------------------------------------------------------

    async def save_file(self, run_id: str, path: str, content: bytes | None) -> None:
        """Keep a file as the run's workspace has it now (`None`: it was removed)."""
        async with self._db_lock:
            await self._db.execute(
                f"INSERT INTO {_SCHEMA}.files (run_id, path, content) VALUES (%s, %s, %s)"
                " ON CONFLICT (run_id, path) DO UPDATE SET content = EXCLUDED.content",
                (run_id, path, content),
            )

    async def files(self, run_id: str) -> dict[str, bytes]:
        """The run's workspace files as last kept, by path."""
        async with self._db_lock:
            cursor = await self._db.execute(
                f"SELECT path, content FROM {_SCHEMA}.files WHERE run_id = %s AND content IS NOT NULL ORDER BY path",
                (run_id,),
            )
            rows = await cursor.fetchall()
        return {cast(str, path): bytes(content) for path, content in rows}

    async def forget(self, run_ids: Sequence[str]) -> None:
        """Drop what is kept for runs that were dropped (their files and task ids)."""
        if not run_ids:
            return
        async with self._db_lock:
            await self._db.execute(f"DELETE FROM {_SCHEMA}.files WHERE run_id = ANY(%s)", (list(run_ids),))
            await self._db.execute(f"DELETE FROM {_SCHEMA}.runs WHERE run_id = ANY(%s)", (list(run_ids),))

    # ---- shutdown --------------------------------------------------------------------------------------

    async def release(self) -> None:
        """Stop working on the queue: runs still going are handed back (pending) for another process."""
        if self._worker is not None and self._worker_task is not None:
            self._worker.shutdown()
            await asyncio.gather(self._worker_task, return_exceptions=True)
            self._worker_task = None

    async def aclose(self) -> None:
        await self.release()
        if self._db is not None:
            await self._db.close()
            self._db = None
