#!/usr/bin/env python3
"""A Mesos framework in plain HTTP + JSON: no Mesos library, Python's stdlib.

It speaks Mesos' v1 scheduler API (POST /api/v1/scheduler) to a meseta (or
Mesos) master:

1. SUBSCRIBE, and read the RecordIO event stream (`<length>\\n<json>`);
2. on the first offer, ACCEPT it with three command tasks: `finish`
   (exits 0), `fail` (exits 3) and `sleeper` (sleeps until killed);
   decline every other offer;
3. ACKNOWLEDGE every update that carries a uuid, checking that agent
   updates name their `agent_id` and carry a `uuid`;
4. once `finish` is TASK_FINISHED, `fail` is TASK_FAILED and `sleeper` is
   TASK_RUNNING: RECONCILE (explicitly, then implicitly) until the master
   confirms `sleeper` still runs, KILL it, wait for TASK_KILLED, TEARDOWN.

It follows the leader: a 307 names it; when the stream breaks (the leader
died) it tries every master given with --master until one accepts a
SUBSCRIBE with the framework id it was given, so its tasks are kept.

Progress goes to stdout, one JSON object per line ({"event": ...}), so a
test can follow it. Exit status 0 when everything above happened.

    python3 examples/frameworks/three_tasks.py --master 127.0.0.1:5050
"""

import argparse
import base64
import http.client
import json
import sys
import threading
import time
import urllib.parse

API = "/api/v1/scheduler"


def say(event, **fields):
    fields["event"] = event
    print(json.dumps(fields), flush=True)


class Redirect(Exception):
    def __init__(self, leader):
        super().__init__(leader)
        self.leader = leader


def leader_from(location, default):
    """host:port out of a Location header (absolute or scheme-relative)."""
    netloc = urllib.parse.urlsplit(location).netloc
    if not netloc and location.startswith("//"):
        netloc = location[2:].split("/", 1)[0]
    return netloc or default


class Framework:
    def __init__(self, masters, timeout, task_cmds):
        self.masters = masters
        self.master = masters[0]
        self.deadline = time.monotonic() + timeout
        self.framework_id = None
        self.stream_id = None
        self.tasks = task_cmds
        self.launched = False
        self.states = {}          # task id -> latest state
        self.agent_of = {}        # task id -> agent id
        self.subscriptions = 0
        self.confirmed_running = False
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.failure = None

    # ---------------------------------------------------------------- calls
    def post(self, body, stream=False):
        host, port = self.master.rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=45 if stream else 10)
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if not stream:
            headers["Mesos-Stream-Id"] = self.stream_id or ""
        conn.request("POST", API, body=json.dumps(body), headers=headers)
        resp = conn.getresponse()
        if resp.status == 307:
            resp.read()
            conn.close()
            raise Redirect(leader_from(resp.getheader("Location", ""), self.master))
        return conn, resp

    def call(self, kind, **fields):
        body = {"type": kind, "framework_id": {"value": self.framework_id}}
        body.update(fields)
        try:
            conn, resp = self.post(body)
        except Redirect as r:
            say("call_redirected", call=kind, leader=r.leader)
            return False
        except OSError as e:
            say("call_failed", call=kind, error=str(e))
            return False
        text = resp.read().decode(errors="replace")
        conn.close()
        if resp.status != 202:
            say("call_refused", call=kind, status=resp.status, body=text)
            return False
        return True

    # --------------------------------------------------------------- stream
    def subscribe(self):
        info = {"user": "root", "name": "three-tasks (python, HTTP+JSON)",
                "failover_timeout": 300.0, "checkpoint": True, "roles": ["*"],
                "capabilities": [{"type": "MULTI_ROLE"}]}
        body = {"type": "SUBSCRIBE", "subscribe": {"framework_info": info}}
        if self.framework_id:
            info["id"] = {"value": self.framework_id}
            body["framework_id"] = {"value": self.framework_id}
        for _ in range(5):
            try:
                conn, resp = self.post(body, stream=True)
            except Redirect as r:
                say("redirected", to=r.leader)
                self.master = r.leader
                continue
            if resp.status != 200:
                text = resp.read().decode(errors="replace")
                conn.close()
                raise OSError(f"SUBSCRIBE answered {resp.status}: {text}")
            if resp.getheader("Transfer-Encoding", "").lower() != "chunked":
                raise OSError("the SUBSCRIBE response is not chunked")
            self.stream_id = resp.getheader("Mesos-Stream-Id")
            return conn, resp
        raise OSError("too many redirects")

    def read_events(self, resp):
        while not self.done.is_set():
            line = resp.readline()
            if not line:
                return  # the master closed the stream
            size = int(line.strip())
            record = resp.read(size)
            if len(record) != size:
                return
            self.handle(json.loads(record))

    def run(self):
        threading.Thread(target=self.ticker, daemon=True).start()
        while not self.done.is_set():
            if time.monotonic() > self.deadline:
                self.fail("timed out; task states: %s" % self.states)
                break
            try:
                conn, resp = self.subscribe()
                self.read_events(resp)
                conn.close()
            except (OSError, http.client.HTTPException, ValueError) as e:
                say("disconnected", master=self.master, error=str(e))
            if self.done.is_set():
                break
            # The master went away: try the others, in turn.
            i = self.masters.index(self.master) if self.master in self.masters else -1
            self.master = self.masters[(i + 1) % len(self.masters)]
            time.sleep(0.3)
        return self.failure is None

    def fail(self, why):
        self.failure = why
        say("failed", reason=why)
        self.done.set()

    # --------------------------------------------------------------- events
    def handle(self, event):
        kind = event.get("type")
        if kind == "SUBSCRIBED":
            sub = event["subscribed"]
            self.framework_id = sub["framework_id"]["value"]
            self.subscriptions += 1
            with self.lock:
                # A new master must confirm the task again before the kill.
                self.confirmed_running = False
            say("subscribed", framework_id=self.framework_id, master=self.master,
                stream_id=self.stream_id, heartbeat=sub.get("heartbeat_interval_seconds"),
                leader=sub.get("master_info", {}).get("pid"), times=self.subscriptions)
        elif kind == "OFFERS":
            self.offers(event["offers"]["offers"])
        elif kind == "UPDATE":
            self.update(event["update"]["status"])
        elif kind == "ERROR":
            self.fail("master error: %s" % event["error"]["message"])
        elif kind in ("HEARTBEAT", "RESCIND"):
            pass
        else:
            say("other_event", type=kind)

    def offers(self, offers):
        with self.lock:
            launch = not self.launched
            self.launched = True
        for n, offer in enumerate(offers):
            if launch and n == 0:
                agent = offer["agent_id"]
                tasks = [{
                    "name": name,
                    "task_id": {"value": name},
                    "agent_id": agent,
                    "resources": [
                        {"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}},
                        {"name": "mem", "type": "SCALAR", "scalar": {"value": 32}},
                    ],
                    "command": {"value": cmd, "shell": True},
                } for name, cmd in self.tasks.items()]
                ok = self.call("ACCEPT", accept={
                    "offer_ids": [offer["id"]],
                    "operations": [{"type": "LAUNCH", "launch": {"task_infos": tasks}}],
                    "filters": {"refuse_seconds": 60}})
                say("accepted", offer=offer["id"]["value"], tasks=list(self.tasks), ok=ok)
            else:
                self.call("DECLINE", decline={"offer_ids": [offer["id"]],
                                              "filters": {"refuse_seconds": 60}})

    def update(self, status):
        task = status["task_id"]["value"]
        state = status["state"]
        reason = status.get("reason")
        agent = status.get("agent_id", {}).get("value")
        uuid = status.get("uuid")
        say("update", task=task, state=state, agent_id=agent, uuid=uuid,
            source=status.get("source"), reason=reason)
        if status.get("source") == "SOURCE_AGENT" and (not agent or not uuid):
            self.fail("agent update of %s without agent_id or uuid: %s" % (task, status))
            return
        if uuid:
            self.call("ACKNOWLEDGE", acknowledge={
                "agent_id": {"value": agent}, "task_id": {"value": task}, "uuid": uuid})
            # The uuid must be base64 of 16 bytes.
            if len(base64.b64decode(uuid)) != 16:
                self.fail("uuid %r is not 16 bytes" % uuid)
        with self.lock:
            self.states[task] = state
            if agent:
                self.agent_of[task] = agent
            if reason == "REASON_RECONCILIATION" and task == "sleeper" and state == "TASK_RUNNING":
                self.confirmed_running = True
        if task == "sleeper" and state == "TASK_KILLED":
            self.call("TEARDOWN")
            say("done", states=self.states, subscriptions=self.subscriptions)
            self.done.set()

    def ticker(self):
        """Drives the steps that wait for a state: reconcile, then kill."""
        killed = False
        while not self.done.is_set():
            time.sleep(1)
            with self.lock:
                states = dict(self.states)
                confirmed = self.confirmed_running
            ready = (states.get("finish") == "TASK_FINISHED"
                     and states.get("fail") == "TASK_FAILED"
                     and states.get("sleeper") == "TASK_RUNNING")
            if not ready or not self.stream_id:
                continue
            if not confirmed:
                self.call("RECONCILE", reconcile={"tasks": [{
                    "task_id": {"value": "sleeper"},
                    "agent_id": {"value": self.agent_of.get("sleeper", "")}}]})
                self.call("RECONCILE", reconcile={})
            elif not killed and self.may_kill():
                killed = self.call("KILL", kill={
                    "task_id": {"value": "sleeper"},
                    "agent_id": {"value": self.agent_of.get("sleeper", "")}})
                say("killing", task="sleeper", ok=killed)

    def may_kill(self):
        return True


class WaitForFailover(Framework):
    """Does not kill `sleeper` before it has re-subscribed once (after its
    first master died), so a test can kill the leader mid-run."""

    def may_kill(self):
        if self.subscriptions < 2:
            if not getattr(self, "_said", False):
                say("waiting_for_failover")
                self._said = True
            return False
        return True


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--master", required=True,
                   help="host:port of the masters, comma separated")
    p.add_argument("--timeout", type=float, default=180.0,
                   help="give up after this many seconds")
    p.add_argument("--wait-for-failover", action="store_true",
                   help="do not kill the last task before the leader changed once")
    args = p.parse_args()
    masters = [m.strip() for m in args.master.split(",") if m.strip()]
    tasks = {"finish": "sleep 1; exit 0", "fail": "sleep 1; exit 3", "sleeper": "sleep 1000"}
    kind = WaitForFailover if args.wait_for_failover else Framework
    ok = kind(masters, args.timeout, tasks).run()
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
