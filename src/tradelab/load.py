"""Load tests: Locust run here, or the lab's Locust master driven through its web API.

    options = LoadOptions(users=50, duration=60, profile="spike")
    result = run_load(settings, lab, options, on_progress=print)
    result.as_dict()  # {"requests", "failures", "rps", "p50_ms", "p95_ms", "p99_ms", ...}
    started = start_load(settings, lab, options)  # --detach: returns once the run is on
    load_status(settings, lab); stop_load(settings, lab)

Locust is never imported here: `import locust` monkey-patches the whole process with
gevent. A local run starts `python -m locust` processes (a master with --autostart and,
with workers, N `--worker` processes); every run, local or on the lab, is followed and
summed up through the master's web API (/stats/requests), so both behave alike.

A detached run (`start_load`) is the same run without the follower: the master's own
run time (-t / the /swarm form's run_time) ends it on time, the Locust processes write
the ledger themselves, and <lab>/state/load-run.json says what runs where, for `load
status` and `load stop`.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tradelab.errors import TradelabError
from tradelab.host import pid_alive
from tradelab.loadtest._ledger import (
    LEDGER_DIR_ENV,
    RUN_ID_ENV,
    LedgerSummary,
    new_run_id,
    read_ledger,
)

if TYPE_CHECKING:
    from tradelab.lab import Lab
    from tradelab.settings import Settings

LOADTEST_DIR = Path(__file__).parent / "loadtest"
# profile -> (locustfile, LoadTestShape class); user type -> (locustfile, User class)
SHAPES = {"steady": ("steady.py", "SteadyShape"), "spike": ("spike.py", "SpikeShape"),
          "market-open": ("market_open.py", "MarketOpenShape")}
USERS = {"trader": ("trader.py", "TraderUser"), "reader": ("reader.py", "ReaderUser"),
         "index": ("index.py", "IndexUser")}
ACTIVE = ("spawning", "running")
UNFINISHED = (*ACTIVE, "stopping", "cleanup")  # stopping: users finish their request in flight
STATS_CACHE_S = 2.2  # Locust memoizes /stats/requests for 2 s
WORKER_REPORT_S = 3.3  # Locust workers send their stats every 3 s
AUTOQUIT_S = 20  # a local master lingers this long after its run, so the final stats can be read


@dataclass
class LoadOptions:
    users: int = 20
    spawn_rate: float | None = None  # default: a tenth of the users per second, at least 1
    duration: float = 300.0
    profile: str = "steady"
    user_type: str = "trader"
    workers: int | None = None  # local: extra worker processes; lab: worker containers
    host: str | None = None
    headless: bool = False  # run here even when the lab has a Locust master
    fail_ratio: float = 0.01

    @property
    def rate(self) -> float:
        return self.spawn_rate or max(1.0, self.users / 10)


@dataclass
class Progress:
    state: str
    users: int
    rps: float
    requests: int
    failures: int
    p95_ms: float | None
    elapsed: float
    duration: float
    workers: int | None = None


@dataclass
class LoadResult:
    requests: int
    failures: int
    rps: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    by_endpoint: dict[str, dict[str, Any]]
    errors: list[dict[str, Any]] = field(default_factory=list)
    target: str = ""
    mode: str = "local"  # local | lab
    run_id: str = ""
    ledger: LedgerSummary | None = None
    interrupted: bool = False

    @property
    def failure_ratio(self) -> float:
        return self.failures / self.requests if self.requests else 0.0

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: getattr(self, k) for k in
                               ("requests", "failures", "rps", "p50_ms", "p95_ms", "p99_ms",
                                "by_endpoint")}
        out.update(failure_ratio=round(self.failure_ratio, 6), target=self.target,
                   mode=self.mode, run_id=self.run_id)
        if self.ledger is not None:
            out["orders"] = {"attempted": len(self.ledger.attempted),
                             "acknowledged": len(self.ledger.acknowledged),
                             "ledger": str(self.ledger.run_dir)}
        return out


def run_load(settings: Settings, lab: Lab, options: LoadOptions,
             on_progress: Callable[[Progress], None] | None = None,
             notice: Callable[[str], None] | None = None) -> LoadResult:
    """Run one load test to its end; locally unless the lab's Locust master should do it."""
    _check_options(options)
    notice = notice or (lambda _msg: None)
    url = _lab_master(settings, options)
    if url:
        return drive_master(settings, lab, url, options, on_progress, notice)
    return run_local(settings, lab, options, on_progress, notice)


def start_load(settings: Settings, lab: Lab, options: LoadOptions,
               notice: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Start a run in the background and return once it runs: on the lab's Locust master
    when it has one, else as local Locust processes that outlive this process."""
    _check_options(options)
    notice = notice or (lambda _msg: None)
    url = _lab_master(settings, options)
    if url:
        run_id = _start_on_master(settings, lab, url, options, notice)
    else:
        local = _start_local(settings, lab, options)
        url, run_id = local.url, local.run_id
        try:
            _wait_until_active(url, alive=lambda: local.master.poll() is None)
        except TradelabError:
            _stop_processes(local.processes)
            _run_state_file(lab).unlink(missing_ok=True)
            raise TradelabError(f"Locust did not start: {_tail(local.master_log)}") from None
    return load_status(settings, lab) | {"ledger": str(lab.state_dir / "load" / run_id)}


def _lab_master(settings: Settings, options: LoadOptions) -> str | None:
    """The lab's Locust master's URL when the run should go there (it answers)."""
    if options.host or options.headless:
        return None
    url = lab_master_url(settings)
    return url if _stats(url) is not None else None


def _wait_until_active(url: str, alive: Callable[[], bool], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while alive() and time.monotonic() < deadline:
        if (_stats(url) or {}).get("state") in ACTIVE:
            return
        time.sleep(0.5)
    raise TradelabError(f"the load test did not start within {timeout:g}s "
                        f"(master at {url}); see `tradelab logs locust-master`")


def lab_master_url(settings: Settings) -> str:
    return f"http://127.0.0.1:{settings.ports.locust}"


def default_host(settings: Settings) -> str:
    return f"http://127.0.0.1:{settings.ports.api}"


def check_target(host: str) -> None:
    """A TradelabError in one line unless `host`/healthz answers 200."""
    import requests

    url = host.rstrip("/") + "/healthz"
    try:
        response = requests.get(url, timeout=5)
    except requests.RequestException as exc:
        raise TradelabError(
            f"cannot reach the target {host} ({connection_error_reason(exc)}); "
            "start the lab with `tradelab up` or point --host at a running tradelab api") from None
    if response.status_code != 200:
        raise TradelabError(f"the target {host} is not healthy: GET /healthz answered "
                            f"{response.status_code}; check it with `tradelab status`")


def connection_error_reason(exc: Exception) -> str:
    """The root cause of a requests error in a few words ("[Errno 111] Connection refused"),
    not the repr chain requests and urllib3 wrap it in."""
    inner: object = exc
    while True:  # requests' error -> urllib3's MaxRetryError -> its .reason
        nested = getattr(inner, "reason", None) or (
            inner.args[0] if isinstance(inner, Exception) and inner.args
            and isinstance(inner.args[0], Exception) else None)
        if nested is None or nested is inner:
            break
        inner = nested
    text = str(inner) or type(inner).__name__
    return text.rsplit(": ", 1)[-1][:120]


# -- local runs ---------------------------------------------------------------------------

def run_local(settings: Settings, lab: Lab, options: LoadOptions,
              on_progress: Callable[[Progress], None] | None = None,
              notice: Callable[[str], None] | None = None) -> LoadResult:
    """Run Locust as child processes against options.host (default: the lab's api)."""
    local = _start_local(settings, lab, options, follower=os.getpid())
    try:
        master = local.master
        report, interrupted = _follow(local.url, options, on_progress, notice,
                                      alive=lambda: master.poll() is None,
                                      deadline=_deadline(options) + 60 * bool(local.workers))
        if report is None:
            raise TradelabError(f"Locust did not start: {_tail(local.master_log)}")
    finally:
        _stop_processes(local.processes)  # the run state stays: `load status` names it
    result = result_from_report(report, target=local.host, mode="local", run_id=local.run_id)
    result.ledger = read_ledger(local.run_dir)
    result.interrupted = interrupted
    return result


@dataclass
class _LocalRun:
    processes: list[subprocess.Popen]
    url: str
    host: str
    run_id: str
    run_dir: Path
    master_log: Path
    workers: int

    @property
    def master(self) -> subprocess.Popen:
        return self.processes[0]


def _start_local(settings: Settings, lab: Lab, options: LoadOptions,
                 follower: int | None = None) -> _LocalRun:
    """Start the Locust processes of one run (in sessions of their own, so they outlive
    this process when nobody follows them) and record them in the run state."""
    host = (options.host or default_host(settings)).rstrip("/")
    check_target(host)
    _refuse_second_local_run(lab)
    run_id = new_run_id()
    ledger_root = lab.state_dir / "load"
    run_dir = ledger_root / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    web_port = _free_port()
    url = f"http://127.0.0.1:{web_port}"
    user_file, user_class = USERS[options.user_type]
    shape_file, _shape = SHAPES[options.profile]
    files = ",".join(str(LOADTEST_DIR / f) for f in (user_file, shape_file))
    common = [sys.executable, "-m", "locust", "-f", files, user_class]
    from tradelab.chaos_state import chaos_file_from_env

    env = {**os.environ, LEDGER_DIR_ENV: str(ledger_root), RUN_ID_ENV: run_id,
           "TRADELAB_SYMBOLS": "[" + ", ".join(settings.symbols) + "]", "PYTHONUNBUFFERED": "1",
           # the clients' own fault (retry-storm) is read from the lab's chaos file
           "TRADELAB_CHAOS_FILE": str(chaos_file_from_env(lab))}
    master_cmd = [*common, "--host", host, "-u", str(options.users), "-r", f"{options.rate:g}",
                  "-t", f"{max(1, round(options.duration))}s", "--autostart",
                  "--autoquit", str(AUTOQUIT_S), "--web-host", "127.0.0.1",
                  "--web-port", str(web_port), "--only-summary",
                  # Users finish the request in flight when the run ends, so an order
                  # the api committed is also acknowledged in the ledger.
                  "--stop-timeout", "10"]
    workers = options.workers or 0
    if workers:
        master_port = _free_port()
        master_cmd += ["--master", "--master-bind-host", "127.0.0.1",
                       "--master-bind-port", str(master_port), "--expect-workers", str(workers),
                       "--expect-workers-max-wait", "60"]
    processes: list[subprocess.Popen] = []
    master_log = run_dir / "locust-master.log"
    try:
        processes.append(_spawn(master_cmd, env, master_log))
        for n in range(1, workers + 1):
            processes.append(_spawn([*common, "--worker", "--master-host", "127.0.0.1",
                                     "--master-port", str(master_port)],
                                    env, run_dir / f"locust-worker-{n}.log"))
    except BaseException:
        _stop_processes(processes)
        raise
    _write_run_state(lab, options, kind="local", url=url, run_id=run_id, host=host,
                     pid=processes[0].pid, pids=[p.pid for p in processes], follower=follower)
    return _LocalRun(processes, url, host, run_id, run_dir, master_log, workers)


def _spawn(cmd: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen:
    with open(log_path, "ab") as log:
        # A session of its own: the terminal's Ctrl-C reaches only tradelab, which then
        # stops the run through the web API and still collects the final stats.
        return subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)


def _stop_processes(processes: list[subprocess.Popen]) -> None:
    # The master first: on SIGTERM it tells its workers to quit, then exits.
    for proc in processes:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _refuse_second_local_run(lab: Lab) -> None:
    state = _read_run_state(lab)
    if state and state["kind"] == "local" and pid_alive(state["pid"]):
        raise TradelabError(f"a load test is already running here (pid {state['pid']}, "
                            f"{state['url']}); stop it with `tradelab load stop`")


# -- the lab's master ---------------------------------------------------------------------

def drive_master(settings: Settings, lab: Lab, url: str, options: LoadOptions,
                 on_progress: Callable[[Progress], None] | None = None,
                 notice: Callable[[str], None] | None = None) -> LoadResult:
    """Start a run on the lab's Locust master (/swarm), follow it, return its stats."""
    notice = notice or (lambda _msg: None)
    run_id = _start_on_master(settings, lab, url, options, notice, follower=os.getpid())
    target = (_read_run_state(lab) or {}).get("host") or f"the api of the master at {url}"
    report, interrupted = _follow(url, options, on_progress, notice, alive=lambda: True,
                                  deadline=_deadline(options))
    if report is None:
        raise TradelabError(f"the lab's Locust master ({url}) stopped answering")
    result = result_from_report(report, target=target, mode="lab", run_id=run_id)
    run_dir = lab.state_dir / "load" / run_id
    result.ledger = read_ledger(run_dir) if run_dir.is_dir() else None
    result.interrupted = interrupted
    return result


def _start_on_master(settings: Settings, lab: Lab, url: str, options: LoadOptions,
                     notice: Callable[[str], None], follower: int | None = None) -> str:
    """Start a run on the lab's Locust master (/swarm); its run id."""
    import requests

    report = _stats(url) or {}
    if report.get("state") in UNFINISHED:
        raise TradelabError(f"a load test is already running on the lab's Locust master ({url}); "
                            "stop it with `tradelab load stop`")
    check_target(default_host(settings))
    if options.workers:
        _scale_workers(settings, lab, options.workers)
    _wait_for_workers(url, options.workers or 1)
    run_id = new_run_id()
    _file, shape = SHAPES[options.profile]
    form = {"user_count": options.users, "spawn_rate": options.rate,
            "run_time": f"{max(1, round(options.duration))}s",
            "user_classes": USERS[options.user_type][1], "shape_class": shape,
            "tradelab_run_id": run_id, "tradelab_symbols": ",".join(settings.symbols)}
    try:
        answer = requests.post(url + "/swarm", data=form, timeout=10).json()
    except (requests.RequestException, ValueError) as exc:
        raise TradelabError(f"the lab's Locust master ({url}) did not start the run: {exc}"
                            ) from None
    if not answer.get("success"):
        raise TradelabError(f"the lab's Locust master refused to start: {answer.get('message')}")
    # No "host" in the form: the master's own --host (the api inside the lab) stays.
    # Profiles and user types are chosen per run only on a master started with the
    # class picker (-f <loadtest dir> --class-picker); otherwise its own locustfile runs.
    # A shape run's answer names the shape but not the user classes: the master only
    # switches shapes with the class picker on, and then it switched the users too.
    picked = shape in answer.get("message", "") or "user_classes" in answer
    if shape not in answer.get("message", ""):
        notice(f"note: the lab's Locust master has no {options.profile!r} shape (it needs "
               f"-f <loadtest dir> --class-picker); running a steady ramp instead")
    if not picked and options.user_type != "trader":
        notice(f"note: the lab's Locust master cannot switch to the {options.user_type!r} "
               "user (it needs --class-picker); running its own users")
    _write_run_state(lab, options, kind="lab", url=url, run_id=run_id,
                     host=answer.get("host") or "", follower=follower)
    return run_id


def _scale_workers(settings: Settings, lab: Lab, workers: int) -> None:
    from tradelab.orchestrator import running_driver

    running_driver(settings, lab).scale("locust-worker", workers)


def _wait_for_workers(url: str, wanted: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        count = _worker_count(_stats(url) or {})
        if count is None or count >= wanted:  # None: not a distributed master
            return
        if time.monotonic() > deadline:
            raise TradelabError(f"the lab's Locust master has {count} of {wanted} workers "
                                "after a minute; check them with `tradelab status`")
        time.sleep(1)


# -- following a run ----------------------------------------------------------------------

def _deadline(options: LoadOptions) -> float:
    return time.monotonic() + options.duration + 60


def _follow(url: str, options: LoadOptions, on_progress, notice, *, alive: Callable[[], bool],
            deadline: float, startup_timeout: float = 90) -> tuple[dict | None, bool]:
    """Poll the master until its run is over; (final /stats/requests report, interrupted)."""
    started = active_since = time.monotonic()
    report: dict | None = None
    seen_active = interrupted = False
    try:
        while alive():
            current = _stats(url)
            if current is None:
                if report is None and time.monotonic() - started < startup_timeout:
                    time.sleep(0.5)
                    continue
                break  # the master is gone: keep the last report we have
            report = current
            state = current.get("state")
            if state in ACTIVE and not seen_active:
                seen_active, active_since = True, time.monotonic()
            if seen_active and state not in UNFINISHED:
                break
            if not seen_active and time.monotonic() - started > startup_timeout:
                raise TradelabError(f"the load test did not start within {startup_timeout:g}s "
                                    f"(master state: {state})")
            if on_progress:
                on_progress(progress_from(current, time.monotonic() - active_since,
                                          options.duration))
            if time.monotonic() > deadline:
                if not seen_active:  # else the report is the previous run's
                    raise TradelabError(f"the load test did not start (master state: {state}); "
                                        f"see `tradelab logs locust-master`")
                notice("the run overran its duration; stopping it")
                _post(url, "/stop")
                break
            time.sleep(1)
    except KeyboardInterrupt:
        interrupted = True
        notice("stopping the load test…")
        _post(url, "/stop")
    if report is not None and alive():
        report = _final_report(url, report)
    return report, interrupted


def _final_report(url: str, last: dict) -> dict:
    time.sleep(STATS_CACHE_S)  # a fresh report, not the memoized one from before the stop
    report = _stats(url) or last
    if _worker_count(report) is None:
        return report
    # Workers report every 3 s, and an order still in flight at the stop is finished after
    # it: wait until a report adds nothing, so the stats count it as the ledger does.
    for _ in range(3):
        time.sleep(WORKER_REPORT_S)
        later = _stats(url)
        if later is None:
            break
        settled = _total_row(later).get("num_requests") == _total_row(report).get("num_requests")
        report = later
        if settled:
            break
    return report


def progress_from(report: dict, elapsed: float, duration: float) -> Progress:
    total = _total_row(report)
    return Progress(
        state=report.get("state", "?"), users=report.get("user_count", 0),
        # Locust 2.32 (the lab's pinned image) has no "current_rps": its "total_rps"
        # is the current rate; later versions send both, "total_rps" being the run's mean.
        rps=round(report.get("current_rps", report.get("total_rps", 0.0)) or 0.0, 1),
        requests=total.get("num_requests", 0), failures=total.get("num_failures", 0),
        p95_ms=(report.get("current_response_time_percentiles") or {}).get(
            "response_time_percentile_0.95"),
        elapsed=elapsed, duration=duration, workers=_worker_count(report))


def _worker_count(report: dict) -> int | None:
    """Connected workers of a distributed master, None for a standalone Locust.

    Locust 2.32 (the lab's image) has no "worker_count", only the "workers" list; a
    worker that just stopped a run is off that list (or "missing") for a few seconds,
    and a /swarm then is ignored ("can't start a distributed test" in its log).
    """
    if "worker_count" in report:
        return report["worker_count"]
    if "workers" not in report:
        return None
    return sum(1 for w in report["workers"] if w.get("state") in ("ready", "spawning",
                                                                    "running"))


def result_from_report(report: dict, *, target: str, mode: str, run_id: str) -> LoadResult:
    total = _total_row(report)
    endpoints = {}
    for row in report.get("stats", []):
        if row.get("name") == "Aggregated":
            continue
        endpoints[f"{row['method']} {row['name']}"] = {
            "method": row["method"], "name": row["name"], **_figures(row)}
    return LoadResult(**_figures(total), by_endpoint=endpoints,
                      errors=report.get("errors", []), target=target, mode=mode, run_id=run_id)


def _figures(row: dict) -> dict[str, Any]:
    def ms(key):
        value = row.get(key)
        return None if value is None else round(float(value), 1)

    return {"requests": row.get("num_requests", 0), "failures": row.get("num_failures", 0),
            "rps": round(row.get("total_rps", 0.0) or 0.0, 2),
            "p50_ms": ms("median_response_time"), "p95_ms": ms("response_time_percentile_0.95"),
            "p99_ms": ms("response_time_percentile_0.99")}


def _total_row(report: dict) -> dict:
    rows = [r for r in report.get("stats", []) if r.get("name") == "Aggregated"]
    return rows[-1] if rows else {}


# -- status and stop ----------------------------------------------------------------------

def find_master(settings: Settings, lab: Lab) -> tuple[str, str, dict]:
    """(kind "local" | "lab", web url, the run's state) of the master that answers."""
    state = _read_run_state(lab) or {}
    if state.get("kind") == "local" and pid_alive(state["pid"]) \
            and _stats(state["url"]) is not None:
        return "local", state["url"], state
    url = lab_master_url(settings)
    if _stats(url) is not None:
        return "lab", url, state if state.get("kind") == "lab" and state["url"] == url else {}
    if state:
        ledger = lab.state_dir / "load" / state["run_id"]
        raise TradelabError(f"no load test is running: the last one (run {state['run_id']}) "
                            f"has ended, its ledger is {ledger}; start one with `tradelab load`")
    raise TradelabError("no load test is running and the lab has no Locust master: "
                        "start one with `tradelab load`")


def load_status(settings: Settings, lab: Lab) -> dict[str, Any]:
    """The run on the master that answers: users, rates, failures, run id, time left."""
    kind, url, state = find_master(settings, lab)
    report = _stats(url) or {}
    progress = progress_from(report, 0, 0)
    elapsed = remaining = None
    if state:
        elapsed = max(0.0, time.time() - state["started_at"])
        running = progress.state in UNFINISHED
        remaining = max(0.0, state["duration"] - elapsed) if running else 0.0
        elapsed = min(elapsed, state["duration"]) if not running else elapsed
    return {"master": url, "kind": kind, "state": progress.state, "users": progress.users,
            "workers": progress.workers, "rps": progress.rps, "requests": progress.requests,
            "failures": progress.failures, "fail_ratio": round(report.get("fail_ratio", 0), 6),
            "p95_ms": progress.p95_ms, "run_id": state.get("run_id"),
            "target": state.get("host") or None, "peak_users": state.get("users"),
            "elapsed_s": None if elapsed is None else round(elapsed),
            "remaining_s": None if remaining is None else round(remaining),
            "detached": bool(state) and not _following(state)}


def _following(state: dict) -> bool:
    """A `tradelab load` still follows this run (it is not detached)."""
    return bool(state.get("follower")) and pid_alive(state["follower"])


def stop_load(settings: Settings, lab: Lab) -> dict[str, Any]:
    """Stop the running test; a local run nobody follows (detached, or its `tradelab load`
    gone) is ended here, once its users have finished the request in flight."""
    kind, url, state = find_master(settings, lab)
    _post(url, "/stop")
    _wait_until_stopped(url)
    if kind == "local":
        if _following(state):
            # The `tradelab load` that started it collects the stats and ends it.
            deadline = time.monotonic() + AUTOQUIT_S
            while pid_alive(state["pid"]) and time.monotonic() < deadline:
                time.sleep(0.5)
        pids = [pid for pid in state.get("pids", [state["pid"]]) if _is_locust(pid)]
        for pid in pids:  # the master first: it tells its workers to quit
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while any(pid_alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.3)
    return {"master": url, "kind": kind, "stopped": True, "run_id": state.get("run_id"),
            "ledger": str(lab.state_dir / "load" / state["run_id"]) if state else None}


def _wait_until_stopped(url: str, timeout: float = 20) -> None:
    """Until the master's users have finished their request in flight (--stop-timeout)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        report = _stats(url)
        if report is None or report.get("state") not in UNFINISHED:
            return
        time.sleep(0.5)


# -- small helpers ------------------------------------------------------------------------

def _check_options(options: LoadOptions) -> None:
    if options.profile not in SHAPES:
        raise TradelabError(f"unknown profile {options.profile!r}: use {', '.join(SHAPES)}")
    if options.user_type not in USERS:
        raise TradelabError(f"unknown user type {options.user_type!r}: use {', '.join(USERS)}")
    if options.users < 1:
        raise TradelabError("--users must be at least 1")
    if options.workers is not None and options.workers < 0:
        raise TradelabError("--workers cannot be negative")


def _stats(url: str) -> dict | None:
    """The master's /stats/requests report, or None when nothing answers there."""
    import requests

    try:
        response = requests.get(url + "/stats/requests", timeout=3)
        data = response.json() if response.status_code == 200 else None
    except (requests.RequestException, ValueError):
        return None
    return data if isinstance(data, dict) and "state" in data else None


def _post(url: str, path: str) -> None:
    import requests

    try:
        requests.post(url + path, timeout=10)
    except requests.RequestException:
        pass  # a master that is gone has stopped too


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_state_file(lab: Lab) -> Path:
    return lab.state_dir / "load-run.json"


def _write_run_state(lab: Lab, options: LoadOptions, **run: Any) -> None:
    """What runs where, for `load status` / `load stop` (follower: the pid of the
    `tradelab load` that follows the run, None when detached)."""
    state = {**run, "started_at": time.time(), "duration": options.duration,
             "users": options.users}
    from tradelab.files import write_atomic

    write_atomic(_run_state_file(lab), json.dumps(state))


def _read_run_state(lab: Lab) -> dict | None:
    try:
        state = json.loads(_run_state_file(lab).read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) and {"kind", "url", "run_id"} <= set(state) \
        else None


def _is_locust(pid: int) -> bool:
    """A live Locust process: a recorded pid is signalled only while it still is one."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"locust" in f.read() and pid_alive(pid)
    except OSError:
        return False


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = [x for x in path.read_text(errors="replace").splitlines() if x.strip()]
    except OSError:
        return "no log"
    return " | ".join(text[-lines:]) or f"no output (log: {path})"
