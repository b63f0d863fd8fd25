# Sourced by the device scripts (image_bench.sh, image_sweep.sh, speed_record.sh, ...): the wheels installed, the
# command's own deadline (its first argument, seconds), and a bench that resumes across commands.
#   source tools/device/common.sh "$1"
# The tree a call carries must stay under 64 MiB with .devwhl (9 MB): the weights are most of it. A text run
# (quality, speed, cost) needs backend/prior/weights and weights_shape: rm -rf results backend/prior/report*
# backend/prior/weights_v6 backend/view_prior/weights; an image run needs backend/prior/weights_v6 (image jobs'
# text prior since session 51) and backend/view_prior/weights: rm -rf results backend/prior/report*
# backend/prior/weights backend/prior/weights_shape. Commit first: `git checkout -- results backend` restores them
# afterwards and also throws away any edit not committed there (session 51 lost two that way).
START=$(date +%s); END=$((START + ${1:-550}))
left() { echo $((END - $(date +%s))); }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .devwhl/*.whl 2>&1 | tail -2
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi -L
# rows of finished jobs (a skipped row is a job still to run)
count() { [ -f "$1" ] && { grep -vc '"skipped": true' "$1" || true; } || echo 0; }
# resumable_bench KIND MARGIN OUT ROWS ARGS...: `python -m backend bench KIND` into OUT until its KIND.jsonl
# has ROWS rows, with --resume and a time budget that leaves MARGIN seconds of the command for the rest
resumable_bench() {
  local kind=$1 margin=$2 out=$3 want=$4; shift 4
  local have=$(count $out/$kind.jsonl)
  [ "$have" -ge "$want" ] && { echo "== $out complete ($have)"; return 0; }
  local b=$(( $(left) - margin )); [ $b -lt 20 ] && { echo "== $out: no time left"; return 1; }
  echo "== $out: $have/$want rows, budget $b s"
  timeout $(( $(left) - 5 )) python -m backend bench $kind --device cuda --resume --time-budget $b --out $out "$@"
}
# nerfacc's CUDA extension built once, before two benches start side by side (session 24: both built it into
# one folder at once and one crashed with FileNotFoundError)
build_cuda_once() {
  python -c "from backend.bench.quality import _build_cuda_extensions as b; b('cuda')" 2>&1 | grep -v Warning | tail -2
}
# restore_state: the folders a former call packed into .devstate/state.tgz.* (carried back with the tree:
# run(carry=[".devwhl", ".devstate"])) unpacked into /tmp, unless this machine still has them (a call on a
# fresh machine resumes where the last one stopped, not from nothing); pack_state DIRS...: them into $OUT.
restore_state() {
  ls .devstate/state.tgz.* >/dev/null 2>&1 || return 0
  cat .devstate/state.tgz.* | tar tzf - | grep -o '^[^/]*' | sort -u | while read d; do
    [ -e /tmp/$d ] || { cat .devstate/state.tgz.* | tar xzf - -C /tmp "$d" && echo "== restored /tmp/$d"; }
  done
}
pack_state() { tar czf - -C /tmp "$@" | split -b 15M - $OUT/state.tgz.; }
