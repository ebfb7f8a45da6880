"""The ``owui-real`` bench's pure helpers, and its socket.io client against a fake server.

The bench itself needs real Open WebUI servers and is run by hand (``python -m bench
owui-real``); what can be checked without them is here: the cell order, the figures and
tables, ``/proc`` parsing, the event routing of the driver, the socket.io packets, and the
Function sources (they must load as Open WebUI loads them: from text, with nothing of this
project importable).
"""

from __future__ import annotations

import json
import os
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
from trio_websocket import WebSocketRequest, serve_websocket

from orpipe.bench.mock_catalogue import parse_variant, variant_of
from orpipe.bench.owui_real import RealOptions, per_worker, plan_cells, variant_name, variant_params
from orpipe.bench.owui_real_driver import Chat, browser_body, on_socket_event, output_text
from orpipe.bench.owui_real_proc import machine_busy_s, parse_proc_stat, parse_stat, sample_tree
from orpipe.bench.owui_real_report import format_tables, pacing_label, percentile, summarize
from orpipe.bench.owui_real_servers import PIPES_BY_NAME, _valves, model_id, server_env
from orpipe.bench.owui_real_socketio import SocketIoClient, open_socketio, parse_packet

REPO = Path(__file__).resolve().parents[2]


# -- the plan of a run -------------------------------------------------------------------------


def test_cells_interleave_the_pipes_and_rotate_the_first():
    options = RealOptions(
        levels=(1, 16),
        delays=(0.0, 20.0),
        reps=2,
        modes=("socket",),
        pipes=("orpipe", "builtin", "bare", "floor"),
    )
    cells = plan_cells(options)
    assert len(cells) == 2 * 2 * 2 * 4
    groups = [cells[i : i + 4] for i in range(0, len(cells), 4)]
    for group in groups:  # each group: one pacing, level and mode, every pipe once
        assert {c.pipe for c in group} == {"orpipe", "builtin", "bare", "floor"}
        assert len({(c.rep, c.delay_ms, c.level, c.mode) for c in group}) == 1
    firsts = [group[0].pipe for group in groups]
    assert len(set(firsts)) == 4  # no pipe always goes first
    assert [c.rep for c in cells[:16]] == [0] * 16  # repetitions are the outer loop
    assert cells[0].per_worker == 8 and cells[-1].per_worker == 2


def test_the_guest_column_is_orpipe_with_the_other_bridge():
    guest = PIPES_BY_NAME["orpipe_guest"]
    assert guest.source == PIPES_BY_NAME["orpipe"].source
    assert _valves(guest, "http://mock/api/v1", ["mock/text:d0"], {})["ENGINE_BRIDGE"] == "guest"
    assert "ENGINE_BRIDGE" not in _valves(PIPES_BY_NAME["orpipe"], "http://m", [], {})
    assert "orpipe_guest" in RealOptions().pipes  # measured by default: it checks the default


def test_per_worker_and_variants():
    assert per_worker(1, 2, 8) == 8
    assert per_worker(16, 2, 8) == 2
    assert per_worker(3, 1, 8) == 3
    assert variant_name(0) == "d0" and variant_name(20) == "d20" and variant_name(2.5) == "d2p5"
    assert variant_params(20, 200) == {"tokens": "200", "tps": "50"}
    assert variant_params(0, 200) == {"tokens": "200", "tps": "0"}
    name, params = parse_variant(
        "d2p5=" + "&".join(f"{k}={v}" for k, v in variant_params(2.5, 9).items())
    )
    assert name == "d2p5" and params == {"tokens": "9", "tps": "400"}
    assert variant_of("mock/text:d2p5") == "d2p5" and variant_of("openai/gpt-4o:d0") is None


def test_parse_variant_refuses_bad_names_and_parameters():
    with pytest.raises(ValueError, match="NAME"):
        parse_variant("d.0=tokens=2")
    with pytest.raises(ValueError, match="PARAM=VALUE"):
        parse_variant("d0=tokens")
    with pytest.raises(ValueError, match=r"mock\.tokenz"):
        parse_variant("d0=tokenz=2")


def test_model_ids_as_open_webui_names_them():
    upstream = "mock/text:d20"
    assert model_id(PIPES_BY_NAME["orpipe"], upstream) == "orpipe.mock.text:d20"
    assert model_id(PIPES_BY_NAME["bare"], upstream) == "bare.mock.text:d20"
    assert model_id(PIPES_BY_NAME["builtin"], upstream) == upstream


def test_every_server_gets_the_same_environment(tmp_path: Path):
    a, b = server_env(tmp_path / "a", "s"), server_env(tmp_path / "b", "s")
    assert {k: v for k, v in a.items() if k != "DATA_DIR"} == {
        k: v for k, v in b.items() if k != "DATA_DIR"
    }
    assert a["ENABLE_TITLE_GENERATION"] == a["ENABLE_FOLLOW_UP_GENERATION"] == "false"
    assert "PYTHONPATH" not in a


# -- /proc -------------------------------------------------------------------------------------


def test_parse_stat_counts_fields_after_the_last_parenthesis():
    fields = ["S", "42"] + ["0"] * 9 + ["1234", "56"] + ["0"] * 30
    text = "99 (a (weird) name) " + " ".join(fields)
    assert parse_stat(text) == (42, 1234, 56)


def test_machine_busy_time_leaves_idle_and_iowait_out():
    text = "cpu  100 5 20 9000 300 1 2 7 0 0\ncpu0 50 2 10 4500 150 0 1 3 0 0\n"
    assert parse_proc_stat(text) == pytest.approx(
        (100 + 5 + 20 + 1 + 2 + 7) / os.sysconf("SC_CLK_TCK")
    )
    with pytest.raises(ValueError, match="cpu line"):
        parse_proc_stat("intr 1 2 3\n")
    assert machine_busy_s() > 0


def test_sample_tree_of_this_process():
    sample = sample_tree(os.getpid())
    assert sample.pids >= 1 and sample.cpu_s > 0 and sample.rss_mib > 1


# -- figures and tables ------------------------------------------------------------------------


def test_percentile_is_nearest_rank():
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile([3.0], 0.99) == 3.0
    assert percentile([], 0.5) is None


def _cell(pipe: str, cpu_s: float, *, rep: int = 0, ok: int = 4, bad: int = 0) -> dict[str, Any]:
    good = [
        {"ok": True, "error": "", "ttft_s": 0.01 * (i + 1), "e2e_s": 1.0, "chunks": 200}
        for i in range(ok)
    ]
    failed = [{"ok": False, "error": "timed out", "ttft_s": None, "e2e_s": None, "chunks": 0}]
    return {
        "rep": rep,
        "delay_ms": 20.0,
        "level": 4,
        "mode": "socket",
        "pipe": pipe,
        "tokens": 200,
        "window_s": 4.0,
        "cpu_s": cpu_s,
        "rss_before_mib": 800.0,
        "rss_after_mib": 801.0,
        "chats": good + failed * bad,
    }


def test_summaries_take_the_median_over_reps_and_count_only_good_answers():
    cells = [
        _cell("builtin", 0.4),
        _cell("builtin", 0.8, rep=1),
        _cell("builtin", 0.6, rep=2),
        _cell("orpipe", 0.9, bad=1),
    ]
    by_pipe = {s.pipe: s for s in summarize(cells)}
    builtin, orpipe = by_pipe["builtin"], by_pipe["orpipe"]
    assert builtin.reps == 3 and builtin.chats == 12 and builtin.failed == 0
    assert builtin.cpu_us_per_token == pytest.approx(0.6e6 / 800)
    assert (builtin.cpu_us_min, builtin.cpu_us_max) == (pytest.approx(500), pytest.approx(1000))
    assert builtin.ttft_p50_ms == pytest.approx(20.0)
    assert builtin.tokens_per_s == pytest.approx(200.0)
    assert builtin.rss_kib_per_chat == pytest.approx(256.0)
    assert orpipe.failed == 1 and orpipe.first_error == "timed out"
    assert orpipe.cpu_us_per_token == pytest.approx(0.9e6 / 800)  # the failed chat's tokens
    assert orpipe.rss_kib_per_chat == pytest.approx(1024.0 / 5)


def test_cells_measured_on_a_busy_machine_are_marked():
    quiet, busy = _cell("builtin", 0.4), _cell("orpipe", 0.4, rep=0)
    quiet.update(settle_s=0.5, others_cpu_s=0.045)  # 1 % of a CPU over 4.5 s
    busy.update(settle_s=0.5, others_cpu_s=0.9)  # 20 %
    by_pipe = {s.pipe: s for s in summarize([quiet, busy])}
    assert by_pipe["orpipe"].others_cpu_percent == pytest.approx(20.0)
    text = format_tables(list(by_pipe.values()), ["orpipe", "builtin"], {})
    row = next(line for line in text.splitlines() if line.startswith("| 20 ms"))
    assert "500 (1.00x) †" in row and row.endswith("| 500 |")
    assert "† other programs used more than 10 % of a CPU" in text
    assert summarize([_cell("floor", 0.1)])[0].others_cpu_percent is None  # older results


def test_cpu_above_idle_takes_the_idle_rate_off_for_the_window():
    base, mine = _cell("builtin", 0.4), _cell("orpipe", 0.6)
    base.update(settle_s=0.5, idle_cpu_per_s=0.02)  # 0.09 s of the 4.5 s is idle work
    mine.update(settle_s=0.5, idle_cpu_per_s=0.02)
    by_pipe = {s.pipe: s for s in summarize([base, mine])}
    assert by_pipe["builtin"].cpu_above_idle_us == pytest.approx(0.31e6 / 800)
    text = format_tables(list(by_pipe.values()), ["orpipe", "builtin"], {})
    assert "above its idle CPU" in text
    assert f"| 20 ms (50 tok/s) | 4 | 638 ({0.51 / 0.31:.2f}x) | 388 |" in text


def test_tables_show_ratios_to_the_built_in_connection():
    summaries = summarize([_cell("builtin", 0.4), _cell("orpipe", 0.6, bad=2)])
    text = format_tables(summaries, ["orpipe", "builtin"], {"builtin": "built-in conn."})
    assert "| pacing | chats at once | orpipe | built-in conn. |" in text
    row = next(line for line in text.splitlines() if line.startswith("| 20 ms"))
    assert "750 (1.50x) ⚠2/6 failed" in row and row.endswith("| 500 |")
    assert pacing_label(0) == "flat out" and pacing_label(20) == "20 ms (50 tok/s)"


# -- the driver's view of Open WebUI's events --------------------------------------------------


def test_socket_events_are_routed_by_message_id_and_checked():
    chat = Chat(started=0.0)
    watching = {"m1": chat}

    def event(kind: str, data: dict[str, Any], message_id: str = "m1") -> dict[str, Any]:
        return {"chat_id": "c", "message_id": message_id, "data": {"type": kind, "data": data}}

    delta = {"type": "response.output_text.delta", "delta": "hi "}
    on_socket_event(watching, "events", event("status", {"description": "Waiting"}))
    assert chat.first is None
    on_socket_event(watching, "events", event("response:completion", delta))
    on_socket_event(watching, "events", event("response:completion", delta, message_id="m2"))
    on_socket_event(watching, "other", event("response:completion", delta))
    assert chat.chunks == 1 and chat.events == 2 and chat.first is not None
    output = [{"type": "message", "content": [{"type": "output_text", "text": "hi"}]}]
    on_socket_event(watching, "events", event("chat:completion", {"done": True, "output": output}))
    assert chat.finished.is_set() and chat.text == "hi"
    record = chat.record("hi ")  # Open WebUI strips the trailing space
    assert record["ok"] and record["chunks"] == 1
    assert not chat.record("other")["ok"]


def test_error_events_fail_the_chat():
    chat = Chat(started=0.0)
    message = {"message_id": "m", "data": {"type": "chat:message:error", "data": {"x": 1}}}
    on_socket_event({"m": chat}, "events", message)
    assert chat.finished.is_set() and chat.record("")["error"].startswith("chat:message:error")


def test_output_text_and_the_browser_body():
    assert output_text(None) is None
    assert output_text([{"type": "reasoning"}, {"type": "message", "content": []}]) == ""
    body = browser_body("m", "sid", "a1", "u1")
    assert body["session_id"] == "sid" and body["id"] == "a1" and body["parent_id"] is None
    assert body["user_message"]["childrenIds"] == ["a1"] and "messages" not in body


# -- socket.io ---------------------------------------------------------------------------------


def test_parse_packet():
    assert parse_packet('0{"sid":"e","pingInterval":25000}') == (
        "open",
        {"sid": "e", "pingInterval": 25000},
    )
    assert parse_packet("2") == ("ping", "")
    assert parse_packet('40{"sid":"s1"}') == ("connect", {"sid": "s1"})
    assert parse_packet('42["events",{"a":1}]') == ("event", ["events", {"a": 1}])
    assert parse_packet('4217["events",{}]') == ("event", ["events", {}])
    assert parse_packet('44{"message":"no"}') == ("connect_error", {"message": "no"})
    assert parse_packet('42/admin,["x"]')[0] == "other"
    assert parse_packet("41") == ("disconnect", None)


async def test_socketio_client_against_a_fake_server(nursery: trio.Nursery):
    seen: list[str] = []

    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        await ws.send_message('0{"sid":"eio1","upgrades":[],"pingInterval":25000}')
        seen.append(str(await ws.get_message()))  # the connect packet with the auth
        await ws.send_message('40{"sid":"sio1"}')
        seen.append(str(await ws.get_message()))  # the client's own event
        await ws.send_message("2")
        seen.append(str(await ws.get_message()))  # the pong
        await ws.send_message('42["events",{"message_id":"m","n":1}]')
        await ws.send_message("41")

    server = await nursery.start(partial(serve_websocket, handler, "127.0.0.1", 0, None))
    port = server.port
    events: list[tuple[str, Any]] = []
    done = trio.Event()

    async def client_task(task_status: trio.TaskStatus[SocketIoClient]) -> None:
        await open_socketio(
            f"http://127.0.0.1:{port}",
            {"token": "t"},
            lambda name, data: events.append((name, data)),
            task_status=task_status,
        )
        done.set()

    with trio.fail_after(10):
        client: SocketIoClient = await nursery.start(client_task)
        assert client.sid == "sio1" and client.connected
        await client.emit("user-join", {"auth": {"token": "t"}})
        await done.wait()
    assert seen[0] == '40{"token": "t"}'
    assert json.loads(seen[1][2:]) == ["user-join", {"auth": {"token": "t"}}]
    assert seen[2] == "3"
    assert events == [("events", {"message_id": "m", "n": 1})]
    assert not client.connected


# -- the Function sources load the way Open WebUI loads them -----------------------------------


def _load(path: str) -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": "function_under_test"}
    source = (REPO / path).read_text(encoding="utf-8")
    assert "import bench" not in source and "from bench" not in source
    assert "from adapters" not in source and "from engine" not in source
    exec(compile(source, path, "exec"), namespace)
    return namespace


def test_bare_pipe_lists_its_models_and_maps_them_back():
    pipe = _load("bench/owui_real_bare_pipe.py")["Pipe"]()
    pipe.valves = pipe.Valves(MODELS="mock/text:d0, mock/text:d20")
    assert [p["id"] for p in pipe.pipes()] == ["mock.text:d0", "mock.text:d20"]


async def test_floor_pipe_yields_the_plan_with_its_pacing():
    pipe = _load("bench/owui_real_floor_pipe.py")["Pipe"]()
    plans = {"mock/text:d0": {"tps": 0, "deltas": ["a ", "b "]}}
    plans["mock/text:d50"] = {"tps": 100, "deltas": ["x", "y", "z"]}
    pipe.valves = pipe.Valves(PLAN_JSON=json.dumps(plans))
    assert [p["id"] for p in pipe.pipes()] == ["mock.text:d0", "mock.text:d50"]
    answer = await pipe.pipe({"model": "floor.mock.text:d0"})
    assert [d async for d in answer] == ["a ", "b "]
    start = trio.current_time()
    answer = await pipe.pipe({"model": "floor.mock.text:d50"})
    assert [d async for d in answer] == ["x", "y", "z"]
    assert trio.current_time() - start >= 2 / 100
    assert "no plan" in await pipe.pipe({"model": "floor.mock.text:nope"})
