#!/bin/sh
# `make image`: the Dockerfile's production and test targets built with buildah (no daemon), on
# the debootstrap stand-in for python:3.11-slim-bookworm (scripts/image-base.sh), then the
# production image run for real (scripts/image-smoke.sh) and described: size, what its venv holds.
# `build-image.sh prepare` builds only the base and the test-tools stage (downloads, mostly), so
# .ci/run can do that while the suite runs outside. Needs root, buildah and debootstrap
# (scripts/install-test-tools.sh installs them).
#
# --layers keeps each step as a cached layer, keyed by its inputs as BuildKit does: the second
# target reuses the first's stages, and a later build redoes only what changed (a code change:
# the suite and what follows; the requirements and Debian test tools sit in layers before the
# sources). IMAGE_NO_CACHE=1 rebuilds every step. --jobs 2 builds the model stage while the
# test stage runs the suite; IMAGE_JOBS=1 builds one stage at a time.
set -eu
cd "$(dirname "$0")/.."
IMAGE=${IMAGE:-localhost/fraud-scoring}
JOBS=${IMAGE_JOBS:-2}

started=$(date +%s)
say() { echo "image: $* [$(($(date +%s) - started)) s]"; }

cache=--layers
[ -n "${IMAGE_NO_CACHE:-}" ] && cache="--layers --no-cache"
base=$(sh scripts/image-base.sh)
say "base $base"

build() {  # TARGET TAG
  # shellcheck disable=SC2086 # $cache is two words on purpose
  buildah bud --isolation chroot --format docker $cache --force-rm --jobs "$JOBS" \
    --build-arg "PYTHON_IMAGE=$base" --target "$1" --tag "$2" .
  say "built --target $1 as $2"
}
if [ "${1:-}" = prepare ]; then
  build test-tools "$IMAGE:test-tools"
  exit 0
fi
# production first: it needs every stage (the suite runs in test), so test is then all cached.
build production "$IMAGE:latest"
build test "$IMAGE:test"

sh scripts/image-smoke.sh "$IMAGE:latest"
say "smoke run passed"

buildah images --format '{{.Name}}:{{.Tag}} {{.Size}}' "$IMAGE:latest" | sed 's/^/image: size /'
# What the production venv holds (requirements.txt only: no offline or test tools) and weighs.
container=$(buildah from --quiet "$IMAGE:latest")
trap 'buildah rm "$container" >/dev/null 2>&1 || true' EXIT
buildah run --isolation chroot "$container" -- sh -c '
  echo "image: /opt/venv $(du -sh /opt/venv | cut -f1)"
  python - <<\EOF
import importlib.metadata as metadata
import sys
import sysconfig

venv = sysconfig.get_paths()["purelib"]
held = sorted(f"{d.name}=={d.version}" for d in metadata.distributions(path=[venv]))
print(f"image: /opt/venv holds {len(held)} distributions:", " ".join(held))
names = {entry.split("==")[0].lower().replace("_", "-") for entry in held}
unexpected = names & {"pip", "setuptools", "pyarrow", "tqdm", "pytest", "hypothesis",
                      "schemathesis", "ruff", "mypy", "cfn-lint", "tritonclient"}
if unexpected:
    sys.exit(f"image: not needed to serve, yet in production: {sorted(unexpected)}")
EOF'

# Every build leaves its steps behind as untagged images (the layer cache): forget those older
# than IMAGE_CACHE_DAYS (7), so a CI machine's storage stays bounded. Layers still used by a
# newer image stay.
buildah images --all --json | python3 -c '
import json, sys, time
cutoff = time.time() - float(sys.argv[1]) * 86400
for image in json.load(sys.stdin):
    if not image["names"] and image["created"] < cutoff:
        print(image["id"])
' "${IMAGE_CACHE_DAYS:-7}" | while read -r old; do
  buildah rmi "$old" >/dev/null 2>&1 || true
done
say "done"
