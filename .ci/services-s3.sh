# A local S3-compatible server for the artifact tests (tests/store/test_artifacts.py,
# tests/runs/test_artifacts_remote.py), for .ci/run (sourced, not run): moto's server mode
# (`moto_server`, from the test environment's moto[server]), on a free local port, in the
# background. start_s3 exports CLDASH_TEST_S3 (its endpoint) and dummy AWS credentials; the tests
# point s3fs at it with AWS_ENDPOINT_URL_S3, as a user points cldash at MinIO or another S3 API.
# Without it the tests start moto's ThreadedMotoServer themselves. stop_s3 stops it.

start_s3() {
  if ! command -v moto_server >/dev/null 2>&1; then
    echo "moto_server is not installed; the S3 tests start moto in-process"
    return 0
  fi
  local port
  port=$(python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  S3_LOG="$(mktemp /tmp/moto-ci.XXXX.log)"
  moto_server -H 127.0.0.1 -p "$port" >"$S3_LOG" 2>&1 &
  S3_PID=$!
  for _ in $(seq 1 100); do   # ready when it answers (about a second)
    if python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/moto-api/')" 2>/dev/null; then
      export CLDASH_TEST_S3="http://127.0.0.1:$port"
      export AWS_ACCESS_KEY_ID=cldash-test AWS_SECRET_ACCESS_KEY=cldash-test AWS_DEFAULT_REGION=us-east-1
      return 0
    fi
    sleep 0.1
  done
  echo "moto_server did not start; the S3 tests start moto in-process"; tail -n 20 "$S3_LOG"
  stop_s3
}

stop_s3() {
  if [ -n "${S3_PID:-}" ]; then
    kill "$S3_PID" 2>/dev/null || true
    wait "$S3_PID" 2>/dev/null || true
    S3_PID=""
  fi
}
