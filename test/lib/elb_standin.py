#!/usr/bin/env python3
"""elb_standin — what the services ask AWS about their load balancer target, played by a test.

Serves, on 127.0.0.1 (a free port, written to DIR/port once listening):
  POST /              ELBv2 DescribeTargetHealth (Query protocol). The SigV4 signature is checked
                      with --key/--secret (service elasticloadbalancing, --region) the way AWS
                      checks it; a request that fails gets 403 SignatureDoesNotMatch. The target
                      named in the form is answered with the state in DIR/state-<group name>
                      ("healthy" when the file is absent). Special states: "http-500" (an AWS
                      error document, status 500) and "garbage" (200, not XML).
  GET /v4/<name>      an ECS container metadata document whose first network has --ip.
Every POST appends one JSON line to DIR/requests.log: ok (signature and form valid), why,
the group name, the target id and port, and the state served.

A test starts it as a child process and changes the state files while the services run.
"""
import argparse
import hashlib
import hmac
import json
import os
import re
import sys
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ARGS = None


def sha256_hex(data):
    return hashlib.sha256(data).hexdigest()


def signing_key(secret, date, region, service):
    key = ("AWS4" + secret).encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


AUTH_RE = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request, "
    r"SignedHeaders=([a-z0-9;-]+), Signature=([0-9a-f]{64})$")


def check_signature(method, path, headers, body):
    """None when the request is signed as AWS requires for this key, else why not."""
    auth = headers.get("Authorization", "")
    m = AUTH_RE.match(auth)
    if not m:
        return "no SigV4 Authorization header: %r" % auth[:80]
    key_id, date, region, service, signed, signature = m.groups()
    if key_id != ARGS.key:
        return "access key %s, expected %s" % (key_id, ARGS.key)
    if region != ARGS.region or service != "elasticloadbalancing":
        return "credential scope %s/%s, expected %s/elasticloadbalancing" % (region, service,
                                                                             ARGS.region)
    amz_date = headers.get("X-Amz-Date", "")
    if not amz_date.startswith(date):
        return "X-Amz-Date %r does not match the scope date %s" % (amz_date, date)
    names = signed.split(";")
    if "host" not in names or "x-amz-date" not in names:
        return "host and x-amz-date must be signed (signed: %s)" % signed
    canonical_headers = ""
    for name in names:
        value = headers.get(name)
        if value is None:
            return "signed header %s is missing" % name
        canonical_headers += "%s:%s\n" % (name, " ".join(value.split()))
    canonical = "\n".join([method, path, "", canonical_headers, signed, sha256_hex(body)])
    scope = "%s/%s/%s/aws4_request" % (date, region, service)
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, sha256_hex(canonical.encode())])
    want = hmac.new(signing_key(ARGS.secret, date, region, service), to_sign.encode(),
                    hashlib.sha256).hexdigest()
    if not hmac.compare_digest(want, signature):
        return "signature does not match"
    return None


def group_name(arn):
    m = re.match(r"^arn:aws:elasticloadbalancing:[^:]+:\d{12}:targetgroup/([^/]+)/[0-9a-f]+$",
                 arn)
    return m.group(1) if m else None


def read_state(group):
    try:
        with open(os.path.join(ARGS.dir, "state-" + group)) as f:
            return f.read().strip() or "healthy"
    except FileNotFoundError:
        return "healthy"


def log_request(entry):
    with open(os.path.join(ARGS.dir, "requests.log"), "a") as f:
        f.write(json.dumps(entry) + "\n")


def error_document(code, message):
    return ("<ErrorResponse xmlns=\"http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/\">"
            "<Error><Type>Sender</Type><Code>%s</Code><Message>%s</Message></Error>"
            "<RequestId>0</RequestId></ErrorResponse>" % (code, message))


def health_document(target_id, port, state):
    return ("<DescribeTargetHealthResponse "
            "xmlns=\"http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/\">"
            "<DescribeTargetHealthResult><TargetHealthDescriptions><member>"
            "<HealthCheckPort>%s</HealthCheckPort>"
            "<AdministrativeOverride><State>no_override</State></AdministrativeOverride>"
            "<TargetHealth><State>%s</State></TargetHealth>"
            "<Target><Port>%s</Port><Id>%s</Id></Target>"
            "</member></TargetHealthDescriptions></DescribeTargetHealthResult>"
            "<ResponseMetadata><RequestId>0</RequestId></ResponseMetadata>"
            "</DescribeTargetHealthResponse>" % (port, state, port, target_id))


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def answer(self, status, body, content_type="text/xml"):
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if not self.path.startswith("/v4/"):
            self.answer(404, "{}", "application/json")
            return
        doc = {"DockerName": "chatflow", "Networks": [
            {"NetworkMode": "awsvpc", "IPv4Addresses": [ARGS.ip]}]}
        self.answer(200, json.dumps(doc), "application/json")

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        why = check_signature("POST", self.path, self.headers, body)
        form = urllib.parse.parse_qs(body.decode(errors="replace"))
        first = lambda k: form.get(k, [""])[0]
        group = group_name(first("TargetGroupArn"))
        target_id, port = first("Targets.member.1.Id"), first("Targets.member.1.Port")
        if why is None and (first("Action") != "DescribeTargetHealth" or
                            first("Version") != "2015-12-01"):
            why = "action %r version %r" % (first("Action"), first("Version"))
        if why is None and (not group or not target_id or not port.isdigit()):
            why = "form without a target group ARN and one target: %r" % body[:200]
        if why is None and self.headers.get("Content-Type", "").split(";")[0] != \
                "application/x-www-form-urlencoded":
            why = "Content-Type %r" % self.headers.get("Content-Type")
        state = read_state(group) if why is None else None
        log_request({"ok": why is None, "why": why, "group": group, "id": target_id,
                     "port": port, "state": state})
        if why is not None:
            self.answer(403, error_document("SignatureDoesNotMatch", why))
        elif state == "http-500":
            self.answer(500, error_document("InternalFailure", "stand-in failure"))
        elif state == "garbage":
            self.answer(200, "<html>not an answer</html>", "text/html")
        else:
            self.answer(200, health_document(target_id, port, state))


def main():
    global ARGS
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dir", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--secret", required=True)
    p.add_argument("--region", required=True)
    p.add_argument("--ip", default="127.0.0.1")
    ARGS = p.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    tmp = os.path.join(ARGS.dir, "port.tmp")
    with open(tmp, "w") as f:
        f.write("%d\n" % server.server_address[1])
    os.rename(tmp, os.path.join(ARGS.dir, "port"))
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
