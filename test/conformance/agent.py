#!/usr/bin/env python3
"""
A conformance agent for the gmq-hub wire protocol, written from the contract alone (docs/wire-protocol.md#mqtt-wire-protocol,
the README's wire section, seed 002 消息格式) in another language than the hub: Python with
Debian's python3-paho-mqtt. It sends the seed's shapes (RFC 3339 times, node_version object,
uptime in seconds, string metric values), signs with HMAC-SHA256 over RFC 8785 canonical JSON,
and checks the hub's signatures. test/conformance/conformance.test.ts runs it against a real hub.

It prints one JSON object per line on stdout for the test to follow:
  {"event": "connected"} {"event": "registered", "heartbeat_interval_s": 1}
  {"event": "refused", "reason": "..."} {"event": "command", "command_id": ..., "command_type": ...}
  {"event": "bye"}

Modes:
  normal     register, register_complete, heartbeat, answer commands (echo; anything else fails
             with exit code 127), stream one log_result chunk per command; on SIGTERM or a closed
             stdin say `disconnect` and leave.
  malformed  send a register whose start_time is not a time, print the refusal and exit 0
             (exit 3 when no register_ack arrives within 10 s: the hub must answer).
"""
import argparse
import hashlib
import hmac
import json
import os
import signal
import socket
import sys
import threading
import time
import uuid
from datetime import datetime, timezone
from urllib.parse import urlparse

import paho.mqtt.client as mqtt

TOPIC_COMMAND_UP = "wdd/RDMC/command/up"
TOPIC_MESSAGE_UP = "wdd/RDMC/message/up"


def say(**event):
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def rfc3339(t=None):
    """RFC 3339 in UTC with milliseconds, like Go's time.Time JSON: 2024-01-01T12:00:00.000Z."""
    dt = datetime.fromtimestamp(time.time() if t is None else t, tz=timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (dt.microsecond // 1000)


def canonical(obj):
    """RFC 8785 (JCS) for what this agent sends: strings, integers, booleans, null, objects, arrays.
    Keys sorted (ASCII here, so code points = UTF-16 units), no whitespace, JSON escapes as JCS."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def sign(msg, secret):
    body = {k: v for k, v in msg.items() if k != "signature"}
    return hmac.new(secret.encode(), canonical(body).encode("utf-8"), hashlib.sha256).hexdigest()


def verified(msg, secret):
    sig = msg.get("signature")
    return isinstance(sig, str) and hmac.compare_digest(sig, sign(msg, secret))


class Agent:
    def __init__(self, args):
        self.a = args
        self.pid = args.project
        self.node_name = "py-conformance"
        self.hostname = socket.gethostname()
        self.instance_id = "%s-%s-%d" % (self.node_name, self.hostname, os.getpid())
        self.started = time.time()
        self.registered = threading.Event()
        self.refused = None
        self.answered = threading.Event()
        self.interval = 5
        self.seen = set()
        self.stop = threading.Event()
        u = urlparse(args.url)
        ws = u.scheme in ("ws", "wss")
        self.client = mqtt.Client(
            client_id="py-%s-%s" % (self.pid, uuid.uuid4().hex[:8]),
            clean_session=True,
            protocol=mqtt.MQTTv311,
            transport="websockets" if ws else "tcp",
        )
        if ws:
            self.client.ws_set_options(path=u.path or "/mqtt")
        self.host, self.port = u.hostname, u.port or (80 if ws else 1883)
        self.client.username_pw_set(args.username, args.password)
        self.client.on_connect = self.on_connect
        self.client.on_message = self.on_message

    # ── sending ───────────────────────────────────────────────────────────────────────────
    def envelope(self, kind, type_name, payload):
        msg = {
            "message_id": str(uuid.uuid4()),
            "type": kind,
            "project_id": self.pid,
            "timestamp": int(time.time() * 1000),
            "version": "1.0",
            "payload": payload,
        }
        if kind == "command":
            msg["command_type"] = type_name
        else:
            msg["data_type"] = type_name
            msg["encrypted"] = False
        msg["signature"] = sign(msg, self.a.secret)
        return msg

    def publish(self, topic, msg):
        info = self.client.publish(topic, json.dumps(msg, ensure_ascii=False), qos=1)
        info.wait_for_publish(10)

    def data(self, type_name, payload):
        self.publish(TOPIC_MESSAGE_UP, self.envelope("message", type_name, payload))

    def register(self, malformed=False):
        payload = {  # seed 002 注册消息
            "timestamp": rfc3339(),
            "node_name": self.node_name,
            "instance_id": self.instance_id,
            "version": "1.0.0",
            "pid": os.getpid(),
            "start_time": "yesterday" if malformed else rfc3339(self.started),
            "capabilities": ["mqtt_control", "heartbeat", "echo"],
            "metadata": {"hostname": self.hostname},
            "node_version": {
                "git_version": "v1.0.0",
                "git_commit": "abc123",
                "build_date": "2024-01-01",
                "go_version": "python%d.%d" % sys.version_info[:2],
                "platform": "linux/amd64",
            },
        }
        self.publish(TOPIC_COMMAND_UP, self.envelope("command", "register", payload))

    def heartbeat(self):
        self.data(
            "heartbeat",
            {  # seed 002 心跳消息
                "timestamp": rfc3339(),
                "node_name": self.node_name,
                "instance_id": self.instance_id,
                "status": "running",
                "pid": os.getpid(),
                "uptime": int(time.time() - self.started),
                "version": "1.0.0",
                "hostname": self.hostname,
                "metrics": {
                    "process_cpu_usage_percent": "2.50",
                    "process_memory_usage_mb": 128,
                    "process_goroutine_count": 42,
                },
            },
        )

    # ── receiving ─────────────────────────────────────────────────────────────────────────
    def on_connect(self, client, _userdata, _flags, rc):
        if rc != 0:
            say(event="connack_refused", rc=rc)
            self.stop.set()
            return
        client.subscribe(
            [("wdd/RDMC/command/down/%s" % self.pid, 1), ("wdd/RDMC/message/down/%s" % self.pid, 1)]
        )
        say(event="connected")

    def on_message(self, _client, _userdata, m):
        try:
            msg = json.loads(m.payload.decode("utf-8"))
        except ValueError:
            return
        if not isinstance(msg, dict) or msg.get("project_id") != self.pid:
            return
        # a hub that knows the project signs everything; only a refusal of an unknown project may be unsigned
        signed = verified(msg, self.a.secret)
        if m.topic.startswith("wdd/RDMC/message/down/"):
            t = msg.get("data_type")
            p = msg.get("payload") or {}
            if t == "register_ack":
                if p.get("accepted") and signed:
                    self.interval = int(p.get("heartbeat_interval_s") or 5)
                    self.registered.set()
                elif not p.get("accepted"):
                    self.refused = p.get("reason") or ""
                    say(event="refused", reason=self.refused, signed=signed)
                self.answered.set()
            elif t == "reregister" and signed:
                threading.Thread(target=self.register, daemon=True).start()
            return
        if not signed:
            say(event="unsigned_command_dropped")
            return
        threading.Thread(target=self.run_command, args=(msg,), daemon=True).start()

    def run_command(self, msg):
        cid = msg.get("message_id")
        # QoS 1 redelivers and the hub repeats until acked: ack again, run once
        self.data("command_ack", {"command_id": cid})
        if cid in self.seen:
            return
        self.seen.add(cid)
        ctype = msg.get("command_type")
        say(event="command", command_id=cid, command_type=ctype)
        start = time.time()
        if ctype == "echo":
            out = json.dumps(msg.get("payload"), separators=(",", ":"))
            self.data("log_result", {"command_id": cid, "seq": 0, "content": "echo from python: %s\n" % out})
            status, code, err = "success", 0, ""
        else:
            out, status, code, err = "", "failure", 127, "unknown command %s" % ctype
        end = time.time()
        self.data(
            "exec_result",
            {
                "command_id": cid,
                "status": status,
                "exit_code": code,
                "output": out,
                "error": err,
                "start_time": rfc3339(start),
                "end_time": rfc3339(end),
                "duration": int(round((end - start) * 1000)),
            },
        )

    # ── main ──────────────────────────────────────────────────────────────────────────────
    def run(self):
        self.client.connect(self.host, self.port, keepalive=30)
        self.client.loop_start()
        deadline = time.time() + 10
        while not self.client.is_connected() and time.time() < deadline and not self.stop.is_set():
            time.sleep(0.05)
        if not self.client.is_connected():
            say(event="not_connected")
            return 2
        # let the SUBACK come back before the first uplink
        time.sleep(0.2)
        if self.a.mode == "malformed":
            self.register(malformed=True)
            ok = self.answered.wait(10)
            self.client.loop_stop()
            self.client.disconnect()
            return 0 if ok and self.refused is not None else 3
        while not self.registered.is_set() and not self.stop.is_set():
            self.register()
            self.registered.wait(5)
        if self.stop.is_set():
            return 1
        self.data("register_complete", {"instance_id": self.instance_id})
        say(event="registered", heartbeat_interval_s=self.interval)
        while not self.stop.is_set():
            self.heartbeat()
            self.stop.wait(self.interval)
        self.data("disconnect", {"reason": "conformance agent stopping"})
        self.client.loop_stop()
        self.client.disconnect()
        say(event="bye")
        return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--url", required=True)
    ap.add_argument("--project", required=True)
    ap.add_argument("--secret", required=True)
    ap.add_argument("--username", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--mode", choices=["normal", "malformed"], default="normal")
    args = ap.parse_args()
    agent = Agent(args)
    signal.signal(signal.SIGTERM, lambda *_: agent.stop.set())

    def watch_stdin():
        sys.stdin.read()
        agent.stop.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    sys.exit(agent.run())


if __name__ == "__main__":
    main()
