# Sourced by benchmarks/gpu_check.sh and benchmarks/gpu_study.sh (from the repository root): the
# Python to use ($PY), ssl-bench and its pure-Python dependencies on the path (an installed
# ssl-bench, or wheels in .whl/ made by benchmarks/gpu_wheels.sh, installed into /tmp/site), the
# shared data ($SSL_BENCH_SHARED_DATA, else shared/data in the checkout, else ../shared/data) and
# the decode cache.
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}"
if [ -z "${SSL_BENCH_SHARED_DATA:-}" ]; then
  for d in shared/data ../shared/data; do
    if [ -f "$d/subsets/ham10000_200x150_jpeg.zip" ]; then export SSL_BENCH_SHARED_DATA="$PWD/$d"; break; fi
  done
fi
export SSL_BENCH_CACHE_DIR=${SSL_BENCH_CACHE_DIR:-/tmp/ssl-bench-cache}
