# Services the tests need, for .ci/run and .ci/latest (sourced, not run): Debian's Chromium
# for the real-browser UI test (driven by Playwright; no browser download), a throw-away
# PostgreSQL server for the store tests on a second database, and a one-node Ray cluster
# (`ray start --head`, from the test environment's ray) for the Ray launcher's tests. All are
# stopped on exit.

install_system_packages() {
  local need=()
  command -v chromium >/dev/null 2>&1 || need+=(chromium)
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
  if [ ${#need[@]} -gt 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null) || echo "could not install: ${need[*]}"
  fi
}

start_postgres() {
  local initdb
  initdb=$(ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null | tail -n 1 || true)
  if [ -z "$initdb" ] || ! id postgres >/dev/null 2>&1; then
    echo "postgresql is not installed; its tests are skipped"
    return 0
  fi
  PG_BIN=$(dirname "$initdb")
  PG_DIR="$(mktemp -d)"
  chown postgres "$PG_DIR"
  if su postgres -c "$initdb -D $PG_DIR/data -A trust >/dev/null && \
      $PG_BIN/pg_ctl -D $PG_DIR/data -o '-p 55432 -k $PG_DIR -c listen_addresses=localhost' \
      -l $PG_DIR/log -w start >/dev/null"; then
    export CLDASH_TEST_POSTGRES="postgresql+psycopg://postgres@localhost:55432/postgres"
  else
    echo "postgresql could not be started; its tests are skipped"
    PG_DIR=""
  fi
}

start_ray() {
  if ! command -v ray >/dev/null 2>&1; then
    echo "ray is not installed; the Ray tests fail under CI"
    return 0
  fi
  RAY_TMP="$(mktemp -d /tmp/ray-ci.XXXX)"
  # 2 CPUs: the runs ask for 1 each, so two share the cluster at a time, as on the CI machine's cores
  if ray start --head --num-cpus 2 --port 6390 --dashboard-host 127.0.0.1 --dashboard-port 8265 \
      --ray-client-server-port 10001 --disable-usage-stats --temp-dir "$RAY_TMP" >"$RAY_TMP/start.log" 2>&1; then
    export CLDASH_TEST_RAY="http://127.0.0.1:8265"
  else
    echo "ray could not be started; the Ray tests fail under CI"; tail -n 20 "$RAY_TMP/start.log"
  fi
}

stop_services() {
  if [ -n "${CLDASH_TEST_RAY:-}" ]; then
    ray stop --force >/dev/null 2>&1 || true
  fi
  if [ -n "${PG_DIR:-}" ]; then
    su postgres -c "$PG_BIN/pg_ctl -D $PG_DIR/data -m fast stop" >/dev/null 2>&1 || true
  fi
}
