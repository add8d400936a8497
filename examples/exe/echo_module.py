#!/usr/bin/env python3
"""An example `type: exe` module for gmq-hub, in plain Python 3 (standard library only).

It speaks the host's line-delimited JSON protocol over stdin/stdout, one object per line
(see core/remote-peer.ts):

  host -> module  {op:'hello', name, config} | {op:'event', id, topic, payload, reply}
                  | {op:'response', id, payload} | {op:'response', id, error} | {op:'stop'}
  module -> host  {op:'subscribe', topic} | {op:'ready'} | {op:'publish', topic, payload}
                  | {op:'request', id, topic, payload} | {op:'reply', id, payload}
                  | {op:'reply', id, error:{code,message}} | {op:'log', level, msg, ...fields}

What it does:
  - request on py/ask           -> replies {echo: payload, from: 'python', pid}
  - event on py/echo/<x>        -> publishes the payload on py/echoed/<x>
  - event on py/relay           -> requests host/modules/list and publishes {count} on py/relayed
  - event on py/crash           -> exits 3 at once (for the host's crash tests); with payload
                                   {linger_s: S} it closes its input first and exits S seconds later
  - {op:'stop'} or stdin EOF    -> exits 0

Config (the module block's own keys in config.yml):
  crash_after: int, default 0 (never)  -- exit with code 3 after handling that many events
  bad_lines:   bool, default false     -- print 9 malformed lines once at start (for the host's tests),
                                          the last one longer than the host's 1 MiB line limit

Usage in config.yml:
  modules:
    py:
      type: exe
      command: python3
      args: [examples/exe/echo_module.py]
"""

import json
import os
import sys
import time

out = sys.stdout


def send(msg):
    # one object per line, flushed at once: the host reads lines, a buffered line never arrives
    out.write(json.dumps(msg, separators=(",", ":")) + "\n")
    out.flush()


def log(level, msg, **fields):
    send(dict(op="log", level=level, msg=msg, **fields))


class Module:
    def __init__(self):
        self.name = None
        self.config = {}
        self.events = 0
        self.next_request = 1
        self.pending = {}  # request id -> callback(payload, error)

    def request(self, topic, payload, callback, timeout_ms=5000):
        rid = self.next_request
        self.next_request += 1
        self.pending[rid] = callback
        send({"op": "request", "id": rid, "topic": topic, "payload": payload, "timeout_ms": timeout_ms})

    def on_hello(self, msg):
        self.name = msg.get("name")
        config = msg.get("config")
        self.config = config if isinstance(config, dict) else {}
        if self.config.get("bad_lines"):
            # a misbehaving module, for the host's tests: each of these must be refused and counted
            out.write("this is not json\n")
            out.write("[1, 2, 3]\n")
            out.write('{"no_op": true}\n')
            out.write('{"op": "teleport"}\n')
            out.write('{"op": "reply", "id": 424242, "payload": 1}\n')
            out.write('{"op": "subscribe", "topic": "a/#/b"}\n')
            out.write('{"op": "publish", "topic": "py/+/bad", "payload": 1}\n')
            out.write('{"op": "request", "id": 990, "topic": "py/#", "payload": 1}\n')
            out.write('{"op": "log", "msg": "' + "x" * (1536 * 1024) + '"}\n')  # longer than the 1 MiB line limit
            out.flush()
        for topic in ("py/echo/#", "py/ask", "py/relay", "py/crash"):
            send({"op": "subscribe", "topic": topic})
        log("info", "python module subscribed", pid=os.getpid())
        send({"op": "ready"})

    def on_event(self, msg):
        topic = msg.get("topic", "")
        payload = msg.get("payload")
        try:
            if topic == "py/crash":
                linger = payload.get("linger_s", 0) if isinstance(payload, dict) else 0
                if isinstance(linger, (int, float)) and linger > 0:
                    # a death whose exit comes late: the input closes now, the process ends later
                    os.close(0)
                    time.sleep(min(linger, 30))
                    os._exit(3)
                sys.exit(3)  # at once, without reading what else waits on stdin (for the host's tests)
            if topic == "py/ask":
                result = {"echo": payload, "from": "python", "pid": os.getpid()}
                if msg.get("reply"):
                    send({"op": "reply", "id": msg.get("id"), "payload": result})
            elif topic.startswith("py/echo/"):
                send({"op": "publish", "topic": "py/echoed/" + topic[len("py/echo/"):], "payload": payload})
            elif topic == "py/relay":

                def relayed(modules, error):
                    if error is not None:
                        log("warn", "relay request failed", code=error.get("code"))
                        send({"op": "publish", "topic": "py/relayed", "payload": {"error": error.get("code")}})
                    else:
                        send({"op": "publish", "topic": "py/relayed", "payload": {"count": len(modules)}})

                self.request("host/modules/list", {}, relayed)
            if msg.get("reply") and topic != "py/ask":
                send({"op": "reply", "id": msg.get("id")})
        except Exception as err:  # a bad event answers with an error, it does not end the module
            if msg.get("reply"):
                send({"op": "reply", "id": msg.get("id"), "error": {"code": "BUS_ERR_HANDLER", "message": str(err)}})
        self.events += 1
        crash_after = self.config.get("crash_after", 0)
        if type(crash_after) is int and 0 < crash_after <= self.events:
            log("warn", "crashing on purpose", events=self.events)
            sys.exit(3)

    def on_response(self, msg):
        callback = self.pending.pop(msg.get("id"), None)
        if callback is not None:
            callback(msg.get("payload"), msg.get("error"))

    def run(self):
        # readline, not `for line in sys.stdin`: each line is handled as soon as it arrives
        for line in iter(sys.stdin.readline, ""):
            line = line.strip()
            if not line:
                continue
            try:
                msg = json.loads(line)
            except ValueError:
                log("warn", "host sent a line that is not JSON")
                continue
            if not isinstance(msg, dict):
                continue
            op = msg.get("op")
            if op == "hello":
                self.on_hello(msg)
            elif op == "event":
                self.on_event(msg)
            elif op == "response":
                self.on_response(msg)
            elif op == "stop":
                log("info", "python module stopping", events=self.events)
                return 0
        return 0  # stdin closed: the host is gone


if __name__ == "__main__":
    sys.exit(Module().run())
