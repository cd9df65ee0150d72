"""The console's Flask application: HTML pages rendered on the server (Jinja2 templates,
autoescaped) plus a few JSON endpoints the pages poll for live parts (node health, charts).

Every page reaches the cluster through one shared :class:`~raftka.client.Admin` (thread-safe:
waitress serves requests from a thread pool) with short timeouts, so an unreachable cluster
gives a 503 page within seconds instead of hanging. Errors never show a traceback: a
:class:`~raftka.v1.errors.RaftkaError` becomes a page with the status of its meaning
(:data:`_STATUS`), malformed input a 400 (``FormError``), anything else a 500 saying it is a
console bug (the traceback goes to the console's log only).

Routes (GET unless said)::

    /                                   overview: nodes and health, controller, partitions
    /topics                             topics; POST creates one
    /topics/<t>                         partitions, leaders, replicas, high watermarks, configs
    /topics/<t>/partitions        POST  add partitions (the new total)
    /topics/<t>/delete                  confirmation form; POST (with the name typed) deletes
    /topics/<t>/messages                message browser: ?partition=&offset=|timestamp=&format=&limit=
    /topics/<t>/produce           POST  produce one test record
    /groups, /groups/<g>                groups; members, assignment, lag (+ chart)
    /groups/<g>/reset             POST  reset offsets: action=dry-run shows the plan, apply does it
    /throughput                         records/s per topic, produce latency per node (charts)
    /api/overview, /api/throughput, /api/latency, /api/groups/<g>/lag    JSON for the pages' scripts

POST requests must come from the console's own pages: a request whose ``Origin`` (or, without
it, ``Referer``) names another host is refused (403), so another site cannot make a browser
delete topics behind its user's back.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import os
import secrets
import threading
import time
from typing import Any
from urllib.parse import urlsplit

from flask import (
    Flask,
    abort,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from werkzeug.exceptions import HTTPException

from raftka.client._admin import Admin
from raftka.client._producer import Producer
from raftka.client._reader import PartitionReader
from raftka.client._units import human_bytes
from raftka.client.console._forms import (
    FORMATS,
    FormError,
    parse_configs,
    parse_headers,
    parse_int,
    parse_partitions,
    parse_timestamp_ms,
    render_bytes,
)
from raftka.client.console._sampler import Sampler
from raftka.v1.errors import (
    BrokerNotAvailableError,
    AuthenticationFailedError,
    AuthorizationFailedError,
    GroupNotEmptyError,
    InvalidConfigError,
    InvalidOffsetError,
    InvalidRequestError,
    NoBrokersAvailable,
    NotEnoughReplicasError,
    OffsetOutOfRangeError,
    RaftkaError,
    RaftkaTimeoutError,
    RequestTimedOutError,
    RequestTooLargeError,
    TopicExistsError,
    UnknownGroupError,
    UnknownPartitionError,
    UnknownTopicError,
)

__all__ = ["create_app"]

log = logging.getLogger("raftka.console")

# RaftkaError class -> HTTP status of the page. Checked in order; retriable errors not listed
# here mean the cluster cannot answer now (503), other errors the cluster refused (502).
_STATUS: tuple[tuple[type[RaftkaError], int, str], ...] = (
    (AuthenticationFailedError, 401, "Not signed in"),
    (AuthorizationFailedError, 403, "Not allowed"),
    (UnknownTopicError, 404, "Unknown topic"),
    (UnknownPartitionError, 404, "Unknown partition"),
    (UnknownGroupError, 404, "Unknown group"),
    (TopicExistsError, 409, "Topic exists"),
    (GroupNotEmptyError, 409, "Group has members"),
    (OffsetOutOfRangeError, 400, "Offset out of range"),
    (InvalidOffsetError, 400, "Invalid offset"),
    (InvalidConfigError, 400, "Invalid config"),
    (InvalidRequestError, 400, "Invalid request"),
    (NotEnoughReplicasError, 400, "Not enough nodes"),
    (RequestTooLargeError, 413, "Record too large"),
    (NoBrokersAvailable, 503, "Cluster unreachable"),
    (BrokerNotAvailableError, 503, "Cluster unreachable"),
    (RequestTimedOutError, 503, "Cluster not answering"),
    (RaftkaTimeoutError, 503, "Cluster not answering"),
)

MESSAGES_LIMIT_MAX = 500
MESSAGES_LIMIT_DEFAULT = 50
READ_TIMEOUT_S = 5.0  # the message browser stops reading after this long


def error_status(err: RaftkaError) -> tuple[int, str]:
    for cls, status, title in _STATUS:
        if isinstance(err, cls):
            return status, title
    if err.retriable:
        return 503, "Cluster not available"
    return 502, "The cluster refused the request"


def create_app(bootstrap: str | list[str], *, sample_interval_s: float = 2.0,
               request_timeout_ms: int = 3000, call_timeout_s: float = 8.0,
               start_sampler: bool = True, security: Any = None,
               login: bool = False) -> Flask:
    """The console for the cluster at ``bootstrap``. ``start_sampler`` starts the
    background sampling thread (throughput and lag charts). ``security``: the
    ``ClientSecurity`` (TLS, credentials) its calls use; without ``login`` every page acts
    as that principal. With ``login`` (a cluster with password authentication) every
    page asks to sign in first and then acts as the signed-in user (``_Sessions``)."""
    app = Flask(__name__)
    app.secret_key = os.urandom(32)  # flashed messages only; nothing secret is kept
    app.config["MAX_CONTENT_LENGTH"] = 2 * 1024 * 1024  # a test record, not a bulk load
    app.add_template_filter(human_bytes, "human_bytes")
    admin = Admin(bootstrap, request_timeout_ms=request_timeout_ms,
                  default_timeout=call_timeout_s, security=security)
    sampler = Sampler(admin, interval_s=sample_interval_s)
    producer_lock = threading.Lock()
    producer: list[Producer] = []  # created on the first test record
    bootstrap_text = bootstrap if isinstance(bootstrap, str) else ",".join(bootstrap)
    sessions = _Sessions(bootstrap, security, request_timeout_ms, call_timeout_s)
    app.extensions["raftka"] = {"admin": admin, "sampler": sampler, "producer": producer,
                                "sessions": sessions}

    def user_admin() -> Admin:
        """The Admin of the signed-in user (with ``login``), else the console's own."""
        if not login:
            return admin
        found = sessions.get(session.get("token", ""))
        if found is None:
            raise AuthenticationFailedError("sign in first (the session ended)")
        return found.admin

    def get_producer() -> Producer:
        if login:
            found = sessions.get(session.get("token", ""))
            if found is None:
                raise AuthenticationFailedError("sign in first (the session ended)")
            return found.producer()
        with producer_lock:
            if not producer:
                producer.append(Producer(bootstrap, acks="all", linger_ms=0,
                                         delivery_timeout_ms=int(call_timeout_s * 1000),
                                         request_timeout_ms=request_timeout_ms,
                                         security=security))
            return producer[0]

    if start_sampler:
        sampler.start()

    @app.context_processor
    def _globals() -> dict[str, Any]:
        signed_in = sessions.get(session.get("token", "")) if login else None
        return {"bootstrap": bootstrap_text, "sampler": sampler.status(),
                "fmt_time": _fmt_time, "login": login,
                "user": signed_in.principal if signed_in is not None else ""}

    # ------------------------------------------------------------------ sign-in

    @app.before_request
    def _require_sign_in():
        if not login or request.endpoint in ("sign_in", "static"):
            return None
        if sessions.get(session.get("token", "")) is not None:
            return None
        if request.path.startswith("/api/"):
            return jsonify({"error": "sign in first", "status": 401}), 401
        return redirect(url_for("sign_in", next=request.full_path.rstrip("?")))

    @app.route("/login", methods=["GET", "POST"])
    def sign_in():
        if not login:
            return redirect(url_for("overview"))
        if request.method == "GET":
            return render_template("login.html", page="login", error="")
        username = request.form.get("username", "").strip()
        password = request.form.get("password", "")
        if not username or not password:
            return render_template("login.html", page="login",
                                   error="give a user name and a password"), 400
        try:
            token = sessions.open(username, password)
        except AuthenticationFailedError:
            return render_template("login.html", page="login",
                                   error="unknown user or wrong password"), 401
        session["token"] = token
        target = request.args.get("next", "")
        return redirect(target if target.startswith("/") and not target.startswith("//")
                        else url_for("overview"))

    @app.post("/logout")
    def sign_out():
        sessions.close(session.pop("token", ""))
        return redirect(url_for("sign_in"))

    # ------------------------------------------------------------------ errors

    @app.errorhandler(RaftkaError)
    def _raftka_error(err: RaftkaError):
        status, title = error_status(err)
        return _error_page(status, title, str(err))

    @app.errorhandler(FormError)
    def _form_error(err: FormError):
        return _error_page(400, "Bad input", str(err))

    @app.errorhandler(HTTPException)
    def _http_error(err: HTTPException):
        return _error_page(err.code or 500, err.name, err.description or "")

    @app.errorhandler(Exception)
    def _bug(err: Exception):
        log.exception("console error on %s %s", request.method, request.path)
        return _error_page(500, "Console error",
                           f"an unexpected {type(err).__name__} in the console (a bug in "
                           "raftka; its log has the details)")

    def _error_page(status: int, title: str, message: str):
        if request.path.startswith("/api/"):
            return jsonify({"error": message, "status": status}), status
        return render_template("error.html", status=status, title=title,
                               message=message), status

    @app.before_request
    def _same_origin_posts() -> None:
        if request.method != "POST":
            return
        source = request.headers.get("Origin") or request.headers.get("Referer")
        if source and source != "null" and urlsplit(source).netloc != request.host:
            abort(403, description="a form of another site may not change this cluster "
                                   f"(request from {source[:200]})")

    # ------------------------------------------------------------------ overview

    @app.get("/")
    def overview():
        return render_template("overview.html", status=_overview(user_admin()), page="overview")

    @app.get("/api/overview")
    def api_overview():
        return jsonify(_overview(user_admin()))

    # ------------------------------------------------------------------ topics

    @app.get("/topics")
    def topics():
        described = user_admin().describe_topics()
        return render_template("topics.html", topics=described, page="topics")

    @app.post("/topics")
    def create_topic():
        form = request.form
        name = form.get("name", "").strip()
        if not name:
            raise FormError("name is required")
        partitions = parse_int(form.get("partitions"), "partitions", minimum=1, maximum=10000,
                               default=1)
        replicas = parse_int(form.get("replication_factor"), "replication factor",
                             minimum=1, maximum=100, default=3)
        configs = parse_configs(form.get("configs", ""))
        user_admin().create_topic(name, partitions, replicas, configs)
        flash(f"created topic {name} with {partitions} partition(s)")
        return redirect(url_for("topic", name=name), 303)

    @app.get("/topics/<name>")
    def topic(name: str):
        desc = user_admin().describe_topic(name)
        configs = user_admin().describe_topic_configs(name)
        return render_template("topic.html", topic=desc, configs=configs, page="topics")

    @app.post("/topics/<name>/configs")
    def alter_configs(name: str):
        form = request.form
        to_set = parse_configs(form.get("set", ""))
        to_reset = [k for k in form.getlist("reset") if k]
        if not to_set and not to_reset:
            raise FormError("nothing to change: give KEY=VALUE lines to set, or tick configs "
                            "to return to their defaults")
        user_admin().alter_topic_config(name, to_set, to_reset)  # checked whole by the controller
        changed = ", ".join([f"{k}={v}" for k, v in sorted(to_set.items())]
                            + [f"{k} (default)" for k in sorted(to_reset)])
        flash(f"configs of {name} changed: {changed}")
        return redirect(url_for("topic", name=name), 303)

    @app.post("/topics/<name>/partitions")
    def add_partitions(name: str):
        total = parse_int(request.form.get("total"), "new partition count", minimum=1,
                          maximum=10000)
        user_admin().add_partitions(name, total)
        flash(f"topic {name} now has {total} partitions")
        return redirect(url_for("topic", name=name), 303)

    @app.route("/topics/<name>/delete", methods=["GET", "POST"])
    def delete_topic(name: str):
        desc = user_admin().describe_topic(name)  # 404 before asking for a confirmation
        if request.method == "GET":
            return render_template("delete_topic.html", topic=desc, page="topics")
        typed = request.form.get("confirm", "").strip()
        if typed != name:
            raise FormError(f"type the topic's name ({name}) to confirm its deletion; "
                            f"got {typed[:100]!r}")
        user_admin().delete_topic(name)
        flash(f"deleted topic {name}")
        return redirect(url_for("topics"), 303)

    @app.get("/topics/<name>/messages")
    def messages(name: str):
        desc = user_admin().describe_topic(name)
        args = request.args
        fmt = args.get("format", "text")
        if fmt not in FORMATS:
            raise FormError(f"format must be one of {', '.join(FORMATS)}, got {fmt[:50]!r}")
        partition = parse_int(args.get("partition"), "partition", minimum=0, default=0)
        if desc.partition(partition) is None:
            raise UnknownPartitionError(
                f"topic {name!r} has partitions 0..{desc.partition_count - 1}; partition "
                f"{partition} does not exist")
        limit = parse_int(args.get("limit"), "limit", minimum=1, maximum=MESSAGES_LIMIT_MAX,
                          default=MESSAGES_LIMIT_DEFAULT)
        bounds = user_admin().list_offsets(name, partition, "latest")
        start_text = args.get("offset", "").strip()
        ts_text = args.get("timestamp", "").strip()
        if start_text and ts_text:
            raise FormError("give an offset or a timestamp, not both")
        timestamp_ms = None
        if ts_text:
            timestamp_ms = parse_timestamp_ms(ts_text)
            start = user_admin().list_offsets(name, partition, timestamp_ms).offset
        elif start_text:
            start = parse_int(start_text, "offset", minimum=0)
            if not bounds.log_start_offset <= start <= bounds.high_watermark:
                held = (f"holds offsets {bounds.log_start_offset} to "
                        f"{bounds.high_watermark - 1}"
                        if bounds.high_watermark > bounds.log_start_offset else "is empty")
                raise OffsetOutOfRangeError(
                    f"offset {start} is out of range: partition {partition} of {name!r} "
                    f"{held} (the next record gets offset {bounds.high_watermark})")
        else:  # the newest `limit` records
            start = max(bounds.log_start_offset, bounds.high_watermark - limit)
        records = _read(user_admin(), name, partition, start, limit, bounds.high_watermark)
        rows = [{
            "offset": r.offset,
            "timestamp": _fmt_time(r.timestamp_ms),
            "timestamp_ms": r.timestamp_ms,
            "key": render_bytes(r.key, "text" if fmt == "json" else fmt),
            "value": render_bytes(r.value, fmt),
            "headers": [(h, render_bytes(v, "text" if fmt == "json" else fmt))
                        for h, v in r.headers],
        } for r in records]
        return render_template(
            "messages.html", topic=desc, partition=partition, rows=rows, fmt=fmt,
            formats=FORMATS, limit=limit, start=start, bounds=bounds,
            offset_arg=start_text, timestamp_arg=ts_text, timestamp_ms=timestamp_ms,
            next_offset=(rows[-1]["offset"] + 1) if rows else start, page="topics")

    @app.post("/topics/<name>/produce")
    def produce(name: str):
        form = request.form
        user_admin().describe_topic(name)  # a clear 404 for a missing topic
        partition_text = form.get("partition", "").strip()
        partition = (parse_int(partition_text, "partition", minimum=0)
                     if partition_text else None)
        key_text = form.get("key", "")
        key = key_text.encode() if key_text else None
        value = form.get("value", "").encode()
        headers = parse_headers(form.get("headers", ""))
        written_partition, offset = get_producer().send(
            name, value, key=key, headers=headers, partition=partition
        ).result(timeout=call_timeout_s + 5)
        flash(f"produced offset {offset} to partition {written_partition}")
        return redirect(url_for("messages", name=name, partition=written_partition,
                                offset=offset), 303)

    # ------------------------------------------------------------------ groups

    @app.get("/groups")
    def groups():
        return render_template("groups.html", groups=user_admin().list_groups(), page="groups")

    @app.get("/groups/<group_id>")
    def group(group_id: str):
        desc = user_admin().describe_group(group_id)
        topic_names = sorted({p.topic for p in desc.partitions}
                             | {t for m in desc.members for t in m.topics})
        return render_template("group.html", group=desc, topic_names=topic_names,
                               page="groups", plan=None, form={})

    @app.post("/groups/<group_id>/reset")
    def reset_group(group_id: str):
        form = request.form
        desc = user_admin().describe_group(group_id)
        action = form.get("action", "dry-run")
        if action not in ("dry-run", "apply"):
            raise FormError(f"action must be dry-run or apply, got {action[:50]!r}")
        topic_name = form.get("topic", "").strip()
        if not topic_name:
            raise FormError("topic is required")
        partitions = parse_partitions(form.get("partitions", ""))
        to = form.get("to", "earliest")
        kwargs: dict[str, Any] = {}
        if to in ("earliest", "latest"):
            kwargs["to"] = to
        elif to == "offset":
            kwargs["to"] = parse_int(form.get("value"), "offset", minimum=0)
        elif to == "timestamp":
            kwargs["timestamp_ms"] = parse_timestamp_ms(form.get("value", ""))
        else:
            raise FormError(f"reset to must be earliest, latest, offset or timestamp, "
                            f"got {to[:50]!r}")
        if partitions:
            plan = user_admin().reset_group_offsets(group_id, partitions=[(topic_name, p)
                                                                   for p in partitions],
                                             dry_run=action == "dry-run", **kwargs)
        else:
            user_admin().describe_topic(topic_name)  # 404 for a missing topic, at once
            plan = user_admin().reset_group_offsets(group_id, topic_name,
                                             dry_run=action == "dry-run", **kwargs)
        if action == "apply":
            flash(f"reset {len(plan)} offset(s) of group {group_id}")
            desc = user_admin().describe_group(group_id)
        topic_names = sorted({p.topic for p in desc.partitions}
                             | {t for m in desc.members for t in m.topics} | {topic_name})
        return render_template("group.html", group=desc, topic_names=topic_names,
                               page="groups", plan=plan, applied=action == "apply",
                               form=form)

    # ------------------------------------------------------------------ charts

    @app.get("/throughput")
    def throughput():
        return render_template("throughput.html", page="throughput")

    @app.get("/api/throughput")
    def api_throughput():
        chart = sampler.throughput(request.args.get("topic") or None)
        if login:  # the sampler reads as the console: show only the user's topics
            visible = {t.name for t in user_admin().describe_topics()}
            chart["series"] = {k: v for k, v in chart["series"].items() if k in visible}
        return jsonify(chart)

    @app.get("/api/latency")
    def api_latency():
        if login:
            user_admin().describe_cluster()  # the user may describe the cluster, or 403
        return jsonify(sampler.latency())

    @app.get("/api/groups/<group_id>/lag")
    def api_lag(group_id: str):
        if login:
            user_admin().describe_group(group_id)  # the user may describe the group, or 403
        return jsonify(sampler.lag(group_id))

    return app


class _Session:
    __slots__ = ("principal", "admin", "_producer", "_security", "_args", "last_used")

    def __init__(self, principal: str, admin: Admin, security: Any, args: tuple) -> None:
        self.principal = principal
        self.admin = admin
        self._producer: Producer | None = None
        self._security = security
        self._args = args
        self.last_used = time.monotonic()

    def producer(self) -> Producer:
        if self._producer is None:
            bootstrap, request_timeout_ms, call_timeout_s = self._args
            self._producer = Producer(bootstrap, acks="all", linger_ms=0,
                                      delivery_timeout_ms=int(call_timeout_s * 1000),
                                      request_timeout_ms=request_timeout_ms,
                                      security=self._security)
        return self._producer

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close(5)
        self.admin.close()


class _Sessions:
    """Signed-in users: a random token (kept in the browser's signed session cookie) ->
    the user's own Admin (and Producer, made on first use) with the console's TLS settings
    and the user's name and password, so every call is the user's and the nodes' ACLs
    decide what each page shows. The password stays in this process's memory only, for
    as long as the session lasts (``IDLE_S`` without a request ends it)."""

    IDLE_S = 30 * 60.0

    def __init__(self, bootstrap: Any, security: Any, request_timeout_ms: int,
                 call_timeout_s: float) -> None:
        self._bootstrap = bootstrap
        self._security = security
        self._args = (bootstrap, request_timeout_ms, call_timeout_s)
        self._lock = threading.Lock()
        self._open: dict[str, _Session] = {}

    def open(self, username: str, password: str) -> str:
        """Sign in: raises AuthenticationFailedError for a wrong name or password."""
        from raftka.client._security import ClientSecurity  # noqa: PLC0415
        base = self._security if self._security is not None else ClientSecurity()
        security = dataclasses.replace(base, username=username, password=password)
        _, request_timeout_ms, call_timeout_s = self._args
        admin = Admin(self._bootstrap, request_timeout_ms=request_timeout_ms,
                      default_timeout=call_timeout_s, security=security)
        try:
            principal = admin.whoami()
        except BaseException:
            admin.close()
            raise
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._open[token] = _Session(principal, admin, security, self._args)
        self._expire()
        return token

    def get(self, token: str) -> _Session | None:
        self._expire()
        with self._lock:
            found = self._open.get(token) if token else None
            if found is not None:
                found.last_used = time.monotonic()
            return found

    def close(self, token: str) -> None:
        with self._lock:
            found = self._open.pop(token, None) if token else None
        if found is not None:
            found.close()

    def close_all(self) -> None:
        with self._lock:
            found, self._open = list(self._open.values()), {}
        for s in found:
            s.close()

    def _expire(self) -> None:
        now = time.monotonic()
        with self._lock:
            idle = [t for t, s in self._open.items() if now - s.last_used > self.IDLE_S]
            gone = [self._open.pop(t) for t in idle]
        for s in gone:
            s.close()


def close_app(app: Flask) -> None:
    state = app.extensions["raftka"]
    state["sessions"].close_all()
    state["sampler"].stop()
    for p in state["producer"]:
        p.close(5)
    state["admin"].close()


def _overview(admin: Admin) -> dict[str, Any]:
    status = admin.cluster_status()
    return {
        "controller_id": status.controller_id,
        "partition_count": status.partition_count,
        "nodes": [{"id": n.id, "address": n.address, "reachable": n.reachable,
                   "leader_count": n.leader_count, "replica_count": n.replica_count,
                   "seen_down_by": list(n.seen_down_by),
                   "healthy": n.reachable and not n.seen_down_by}
                  for n in status.nodes],
        "under_replicated": [{"topic": p.topic, "partition": p.partition,
                              "leader_id": p.leader_id, "replicas": list(p.replicas),
                              "missing": list(p.missing)} for p in status.under_replicated],
        "leaderless": [{"topic": tp.topic, "partition": tp.partition}
                       for tp in status.leaderless],
        "at": int(time.time() * 1000),
    }


def _read(admin: Admin, topic: str, partition: int, start: int, limit: int,
          high_watermark: int) -> list[Any]:
    """Up to ``limit`` records from ``start``, stopping at the high watermark seen before
    (a busy partition would otherwise never end) or after READ_TIMEOUT_S."""
    if start >= high_watermark:
        return []
    records: list[Any] = []
    deadline = time.monotonic() + READ_TIMEOUT_S
    with PartitionReader(admin._cluster, topic, partition, offset=start, max_wait_ms=100,
                         read_ahead=False) as reader:
        while len(records) < limit and time.monotonic() < deadline:
            records.extend(r for r in reader.poll(timeout=min(1.0, deadline - time.monotonic()),
                                                  max_records=limit - len(records))
                           if r.offset < high_watermark)
            position = reader.position
            if position is not None and position >= high_watermark:
                break
    return records[:limit]


def _fmt_time(ms: int | float | None) -> str:
    if not ms:
        return ""
    when = datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc)
    return when.strftime("%Y-%m-%d %H:%M:%S.") + f"{int(ms) % 1000:03d}Z"
