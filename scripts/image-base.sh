#!/bin/sh
# Prints the name of a local buildah image that stands in for python:3.11-slim-bookworm (no
# registry serves base images to these machines), making it first if needed:
#   debootstrap --variant=minbase bookworm + python3 python3-venv python3-pip ca-certificates
#   passwd, `python` -> python3 (bookworm's python3 is 3.11), PATH with /usr/sbin.
# The package registries are reached through a proxy with its own CA: the machine's CA bundle
# is copied in after ca-certificates is installed (so the package does not overwrite it) and pip
# is pointed at it (Debian's pip would otherwise use its own certifi bundle).
#
# Cached by a hash of this recipe and the CA bundle: the image in buildah's storage, and an OCI
# archive under $IMAGE_CACHE_DIR that survives a wiped storage (re-imported with the same ID, so
# buildah's layer cache still matches). A fresh machine builds it in a few minutes.
# Needs root, debootstrap and buildah. Progress goes to stderr; stdout is the image name only.
set -eu

CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
CACHE_DIR=${IMAGE_CACHE_DIR:-/var/cache/fraud-scoring}
PATH_IN_IMAGE=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
PACKAGES="python3 python3-venv python3-pip ca-certificates passwd"

key=$(cat "$0" "$CA_BUNDLE" | sha256sum | cut -c1-16)
name=localhost/fraud-base:bookworm-$key
archive=$CACHE_DIR/base-$key.oci.tar

say() { echo "image-base: $*" >&2; }

if buildah inspect --type image "$name" >/dev/null 2>&1; then
  say "reusing $name"
  echo "$name"
  exit 0
fi
if [ -f "$archive" ]; then
  say "loading $name from $archive"
  buildah tag "$(buildah pull --quiet "oci-archive:$archive")" "$name"
  echo "$name"
  exit 0
fi

say "building $name (debootstrap bookworm; a few minutes)"
container=$(buildah from scratch)
trap 'buildah rm "$container" >/dev/null 2>&1 || true' EXIT
root=$(buildah mount "$container")
# The default mirror (deb.debian.org over http); main only, which has everything listed above.
debootstrap --variant=minbase bookworm "$root" >&2
buildah run --isolation chroot "$container" -- sh -c "
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends $PACKAGES
  apt-get clean
  rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin
" >&2
cp "$CA_BUNDLE" "$root$CA_BUNDLE"
ln -sf python3 "$root/usr/bin/python"
buildah umount "$container" >/dev/null
buildah config \
  --env "PATH=$PATH_IN_IMAGE" \
  --env LANG=C.UTF-8 \
  --env "PIP_CERT=$CA_BUNDLE" \
  --env "REQUESTS_CA_BUNDLE=$CA_BUNDLE" \
  --env "SSL_CERT_FILE=$CA_BUNDLE" \
  --cmd python3 \
  "$container"
# A fixed timestamp: the same recipe gives the same image config, whenever it is built.
buildah commit --quiet --timestamp 0 --rm "$container" "$name" >/dev/null
trap - EXIT
mkdir -p "$CACHE_DIR"
buildah push --quiet "$name" "oci-archive:$archive.partial:$name"
mv "$archive.partial" "$archive"
say "built $name; cached as $archive"
echo "$name"
