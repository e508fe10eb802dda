#!/bin/sh
# Runs an image's own start command (its CMD, unchanged but for --host 127.0.0.1 and a free
# --port appended: argparse keeps the last) with buildah, as appuser, on the host network; waits
# for /health, scores model/mock-request-body.json through it (200 and a fraud-score), then sends
# SIGTERM and expects a clean exit (0) within the graceful-shutdown bound. The working container
# is removed however it ends. Usage: scripts/image-smoke.sh IMAGE. Needs root and buildah.
set -eu
image=$1
cd "$(dirname "$0")/.."

# A throwaway key, handed to the container in its environment (never in the image). Not a
# secret: it guards a loopback port for a minute, and buildah run takes it on its command line.
key=$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
log=$(mktemp)
container=$(buildah from --quiet "$image")
runner=""

app_pid() {  # the start command, below buildah run -> buildah-chroot-runtime -> -exec
  pid=$runner
  for _ in 1 2 3; do
    pid=$(pgrep -P "$pid" | head -n 1)
    [ -n "$pid" ] || return 1
  done
  echo "$pid"
}

cleanup() {
  status=$?
  if [ -n "$runner" ] && kill -0 "$runner" 2>/dev/null; then
    # The workers too: killed alone, the supervisor would leave them serving, orphaned.
    if pid=$(app_pid); then
      pkill -KILL -P "$pid" 2>/dev/null || true
      kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$runner" 2>/dev/null || true
  fi
  buildah rm "$container" >/dev/null 2>&1 || true
  if [ "$status" != 0 ]; then
    echo "image-smoke: FAILED; the service's log:" >&2
    tail -n 40 "$log" >&2
  fi
  rm -f "$log"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The image's CMD, turned into shell words safely.
command=$(buildah inspect --type image "$image" \
  | python3 -c 'import json, shlex, sys; print(shlex.join(json.load(sys.stdin)["Docker"]["config"]["Cmd"]))')
[ -n "$command" ] || { echo "image-smoke: $image has no CMD" >&2; exit 1; }
eval "set -- $command"
echo "image-smoke: $* --host 127.0.0.1 --port $port"
buildah run --isolation chroot --network host --user appuser --env "API_KEY=$key" \
  "$container" -- "$@" --host 127.0.0.1 --port "$port" >"$log" 2>&1 &
runner=$!

python3 - "$port" "$key" "$runner" <<'EOF'
"""Wait for readiness, then score the sample transaction as a client would."""
import json
import sys
import time
import urllib.error
import urllib.request

port, key, runner = sys.argv[1:4]


def running(pid: str) -> bool:
    """Not exited (an exited child stays a zombie until the shell waits for it)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


base = f"http://127.0.0.1:{port}"
started = time.monotonic()
while True:
    try:
        with urllib.request.urlopen(f"{base}/health", timeout=2) as answer:
            health = json.load(answer)
            break
    except (OSError, urllib.error.URLError):
        if not running(runner):
            sys.exit("image-smoke: the start command exited before /health answered")
        if time.monotonic() - started > 180:
            sys.exit("image-smoke: /health did not answer 200 within 180 s")
        time.sleep(1)
print(f"image-smoke: /health {health} after {time.monotonic() - started:.1f} s")
with open("model/mock-request-body.json", "rb") as body:
    request = urllib.request.Request(
        f"{base}/v1/fraud-score",
        data=body.read(),
        headers={"Content-Type": "application/json", "X-API-Key": key},
    )
with urllib.request.urlopen(request, timeout=10) as answer:
    status, result = answer.status, json.load(answer)
print(f"image-smoke: POST /v1/fraud-score -> {status} {result}")
if status != 200 or not isinstance(result.get("fraud-score"), int):
    sys.exit("image-smoke: expected 200 with an integer fraud-score")
EOF

pid=$(app_pid)
uid=$(awk '/^Uid:/ { print $2 }' "/proc/$pid/status")
echo "image-smoke: the start command runs as uid $uid"
[ "$uid" != 0 ]
kill -TERM "$pid"
started=$(date +%s)
code=0
wait "$runner" || code=$?
runner=""
echo "image-smoke: stopped by SIGTERM: exit $code after $(($(date +%s) - started)) s"
[ "$code" = 0 ]
echo "image-smoke: passed"
