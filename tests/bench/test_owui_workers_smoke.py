"""The parts of ``make owui-smoke``'s multi-worker step (``bench.owui_workers_smoke``) that
run without Open WebUI: which process serves a connection, the turns' bodies, the summary's
figures, and the store checks against the machine's PostgreSQL and a redis-server of their own."""

from __future__ import annotations

import os
import socket

import psycopg
import redis

from orpipe.bench.owui_workers_smoke import (
    PG_ADMIN_URL,
    ChatResult,
    Turn,
    fresh_database,
    is_worker_cmdline,
    parse_tcp_table,
    served_by,
    stored_rows,
    tally,
    turn_body,
    write_behind_streams,
)
from orpipe.bench.services import redis_server

# Two lines as Linux writes them: a listener on 127.0.0.1:8080 (no remote) and an
# accepted connection 127.0.0.1:8080 <- 127.0.0.1:51000, plus a line with no inode.
TCP_TABLE = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1
   1: 0100007F:1F90 0100007F:C738 01 00000000:00000000 00:00000000 00000000     0        0 777 1
   2: 0100007F:C738 0100007F:1F90 06 00000000:00000000 03:00000000 00000000     0        0 0 3
   garbage
"""


def test_parse_tcp_table_maps_ports_to_inodes() -> None:
    table = parse_tcp_table(TCP_TABLE)
    assert table == {(8080, 0): 4242, (8080, 51000): 777}


def test_parse_tcp_table_skips_malformed_lines() -> None:
    assert parse_tcp_table("header\n 0: nonsense zz:zz 01 a b c d e f g\n") == {}
    assert parse_tcp_table("") == {}


def test_served_by_finds_the_process_holding_the_accepted_socket() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)) as client:
            accepted, _ = listener.accept()
            with accepted:
                client_port = client.getsockname()[1]
                assert served_by(os.getpid(), port, client_port) == os.getpid()
                # A port nobody connected from is served by no one.
                assert served_by(os.getpid(), port, 1) is None


def _result(index: int, first: int | None, second: int | None, replayed: bool) -> ChatResult:
    return ChatResult(
        index,
        Turn(text="a", reasoning=1, worker=first),
        Turn(text="b", reasoning=1, worker=second),
        replayed=replayed,
        what="",
    )


def test_tally_counts_replays_crossings_and_turns_per_worker() -> None:
    figures = tally(
        [
            _result(1, 10, 11, replayed=True),  # crossed
            _result(2, 10, 10, replayed=True),
            _result(3, 11, 10, replayed=False),  # crossed, not replayed
            _result(4, None, 10, replayed=True),  # unknown: not counted as crossed
        ]
    )
    assert figures == {
        "chats": 4,
        "replayed": 3,
        "crossed": 2,
        "crossed_replayed": 1,
        "unknown_worker": 1,
        "turns_by_worker": {"pid 10": 5, "pid 11": 2, "unknown": 1},
    }


def test_tally_of_nothing() -> None:
    assert tally([])["chats"] == 0


def test_turn_body_first_turn_is_a_root_message_of_the_kept_chat() -> None:
    body = turn_body("c1", [], "Q1", parent_id=None, user_message_id="u1", message_id="a1")
    assert body["chat_id"] == "c1"
    assert body["id"] == "a1"
    assert body["parent_id"] is None
    assert "session_id" not in body  # no socket: answered within the request
    assert body["user_message"]["id"] == "u1"
    assert body["user_message"]["parentId"] is None
    assert body["user_message"]["childrenIds"] == ["a1"]
    assert body["messages"] == [{"role": "user", "content": "Q1"}]


def test_turn_body_second_turn_hangs_under_the_first_answer_and_carries_it() -> None:
    body = turn_body(
        "c1", [("Q1", "A1")], "Q2", parent_id="a1", user_message_id="u2", message_id="a2"
    )
    assert body["parent_id"] == "a1"
    assert body["user_message"]["parentId"] == "a1"
    assert body["user_message"]["content"] == "Q2"
    assert body["messages"] == [
        {"role": "user", "content": "Q1"},
        {"role": "assistant", "content": "A1"},
        {"role": "user", "content": "Q2"},
    ]


def test_is_worker_cmdline_tells_uvicorns_workers_from_its_helpers() -> None:
    python = b"/venv/bin/python3\x00-c\x00"
    worker = python + b"from multiprocessing.spawn import spawn_main; spawn_main(tracker_fd=5, "
    worker += b"pipe_handle=7)\x00--multiprocessing-fork\x00"
    tracker = python + b"from multiprocessing.resource_tracker import main;main(4)\x00"
    supervisor = b"/venv/bin/python3\x00/venv/bin/open-webui\x00serve\x00--port\x008080\x00"
    assert is_worker_cmdline(worker)
    assert not is_worker_cmdline(tracker)
    assert not is_worker_cmdline(supervisor)


def test_a_fresh_database_counts_only_the_functions_artifact_tables_and_is_dropped() -> None:
    with fresh_database() as url:
        assert stored_rows(url) == {}
        with psycopg.connect(url, autocommit=True) as db:
            db.execute("CREATE TABLE orpipe_artifacts_abc (id text)")
            db.execute("INSERT INTO orpipe_artifacts_abc VALUES ('a'), ('b')")
            # "_" is a LIKE wildcard: a look-alike name must not be counted.
            db.execute("CREATE TABLE orpipeXartifacts_zzz (id text)")
        assert stored_rows(url) == {"orpipe_artifacts_abc": 2}
        name = url.rsplit("/", 1)[1]
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        left = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchall()
    assert left == []


def test_write_behind_streams_are_the_functions_queues_only() -> None:
    with redis_server(appendfsync=None) as server, redis.Redis.from_url(server.url) as client:
        assert write_behind_streams(server.url) == []
        client.xadd("orpipe:ns1:artifacts", {"row": "x"})
        client.xadd("orpipe:ns1:artifacts:dead", {"row": "y"})
        client.set("orpipe:ns1:other", "z")
        assert write_behind_streams(server.url) == ["orpipe:ns1:artifacts"]
