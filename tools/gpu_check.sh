#!/usr/bin/env bash
# Every CUDA test case and every notebook of the course, run on an NVIDIA GPU: one prepared command.
#
#   on the GPU machine, in the checkout:   bash tools/gpu_check.sh            (make gpu-check)
#   here, on the CPU (all but CUDA):       bash tools/gpu_check.sh --dry      (make gpu-check-dry)
#
# The GPU machine this was written for: one NVIDIA H100, 16 cores, Python 3.12 with a CUDA build of
# PyTorch and the packages of tools/gpu_system_packages.txt, no package index, at most 64 MiB of files
# per command (checkout included), ignored files kept between commands while it stays up. So, first,
# here:   make gpu-wheelhouse    -> .gpu-wheelhouse/ (tools/gpu_wheelhouse.py), and it prints the plan:
#
#   command 1: send the checkout + .gpu-wheelhouse/minilm-1;    run  bash tools/gpu_check.sh --stage
#   command 2: send the checkout + .gpu-wheelhouse/minilm-2;    run  bash tools/gpu_check.sh --stage
#   command 3: send the checkout + .gpu-wheelhouse/wheels + .gpu-wheelhouse/minilm-3;
#              run  bash tools/gpu_check.sh --out DIR           (then bring DIR back)
#
# one right after the other on the same machine: the MiniLM wheel (84 MB, the weights of lesson 06) is
# cut in parts that fit beside the checkout; --stage checks a part's sha256 and keeps a copy in
# /var/tmp/attn-course-gpu, and the last command joins the parts and checks the whole wheel's sha256.
#
# What the check does (ATTN_COURSE_DEVICE=cuda; --dry: cpu, and a small part of it, see below):
#   1. a virtual environment (.gpu-work/venv): the machine's own Python and PyTorch (its site-packages
#      added through a .pth file: `python3` there is itself a virtual environment, so
#      --system-site-packages would not reach its PyTorch), the wheelhouse installed offline
#      (pip --no-index --no-deps), this checkout (pip install -e); `tools/gpu_env.py verify`
#      then imports every module the check needs and loads the MiniLM weights;
#   2. unit: the package tests of `make test-fast` (not browser, grading_run or gpu_dry), every CUDA case;
#   3. gpu:  strict nbval of every solutions/*.ipynb and nbval of every lessons/*.ipynb, on the GPU;
#   4. cpu:  the same notebooks on the same machine's CPU, for the time table, when --budget allows;
#   each with pytest-xdist (-n JOBS --dist loadscope), each under a time limit, then tools/gpu_report.py.
# It writes to --out (default test-artifacts/gpu): junit-unit.xml, junit-gpu.xml, junit-cpu.xml,
# summary.md, times.md (seconds per notebook, CPU vs GPU), environment.txt and log.txt. Exit status 0
# only when nothing failed, no CUDA test case was skipped and some ran.
#
# --dry runs here what can run without CUDA, in about a minute, so that this script cannot rot: the
# same virtual environment built offline from the wheelhouse (.gpu-wheelhouse with its local/ wheels for
# this Python when `make gpu-wheelhouse` has run, else one repacked offline from .venv's installed
# packages), .venv's own PyTorch (CPU) standing in for the GPU machine's (its packages of
# tools/gpu_system_packages.txt linked into .gpu-dry/system-site), the MiniLM parts staged, joined and
# checked, verify, the CUDA test cases collected (they would run; here they are skipped), the unit
# tests of tests/test_device_data.py, strict nbval of solutions/01 on the CPU, and the reports.
# tests/test_gpu_check.py runs it.
#
# Options:
#   --dry            the CPU rehearsal above          --stage        check and keep the MiniLM parts sent
#                                                     (with --dry: kept in the --work folder)
#   --out DIR        where the reports go             --jobs N       pytest-xdist workers (cores; --dry: 1)
#   --budget S       seconds the whole check may take (default 480): each phase is stopped in time
#                    (unit at S/3), and phase 4 runs only when it should end in time
#   --no-cpu         skip phase 4                     --wheelhouse DIR   (default .gpu-wheelhouse)
#   --work DIR       venv and staging (default .gpu-work; --dry: .gpu-dry)
#   --python PY      the Python that holds PyTorch (default python3; --dry: .venv/bin/python)
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 2

usage() { sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
die() { echo "gpu_check: $*" >&2; exit 2; }

DRY=0 STAGE=0 OUT="" JOBS="" BUDGET=480 CPU=1 WH=".gpu-wheelhouse" WH_GIVEN=0 WORK="" PY=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dry) DRY=1 ;;
    --stage) STAGE=1 ;;
    --no-cpu) CPU=0 ;;
    --out|--jobs|--budget|--wheelhouse|--work|--python)
      [ $# -ge 2 ] && [ -n "$2" ] || die "$1 needs a value (see --help)"
      case "$1" in
        --out) OUT=$2 ;; --jobs) JOBS=$2 ;; --budget) BUDGET=$2 ;;
        --wheelhouse) WH=$2; WH_GIVEN=1 ;; --work) WORK=$2 ;; --python) PY=$2 ;;
      esac
      shift ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
  shift
done
case "$JOBS" in ''|*[!0-9]*) [ -z "$JOBS" ] || die "--jobs wants a whole number, got '$JOBS'" ;; esac
case "$BUDGET" in ''|*[!0-9]*) die "--budget wants seconds, got '$BUDGET'" ;; esac
[ "$JOBS" != 0 ] || die "--jobs must be at least 1"

if [ $DRY = 1 ]; then
  MODE=dry; DEVICE=cpu
  : "${OUT:=test-artifacts/gpu-dry}" "${WORK:=.gpu-dry}" "${PY:=.venv/bin/python}" "${JOBS:=1}"
  STAGE_DIR=$WORK/stage
else
  MODE=gpu; DEVICE=cuda
  : "${OUT:=test-artifacts/gpu}" "${WORK:=.gpu-work}" "${PY:=python3}" "${JOBS:=$(nproc)}"
  STAGE_DIR=/var/tmp/attn-course-gpu
fi
command -v "$PY" >/dev/null 2>&1 || die "no Python at '$PY' (--python)"
START=$SECONDS
mkdir -p "$OUT" "$WORK" || die "cannot create $OUT or $WORK"
OUT=$(cd "$OUT" && pwd) WORK=$(cd "$WORK" && pwd)
LOG=$OUT/log.txt
: >"$LOG"
exec > >(tee -a "$LOG") 2>&1
TEE=$!
trap 'exec >&- 2>&-; wait "$TEE" 2>/dev/null' EXIT   # let tee write the last lines before the script ends
step() { printf '\n== [%4ss] %s\n' "$((SECONDS - START))" "$*"; }

# ---------------------------------------------------------------- --stage: one MiniLM part per command
if [ $STAGE = 1 ]; then
  step "stage the MiniLM parts sent with this command ($WH/minilm-*) into $STAGE_DIR"
  command -v nvidia-smi >/dev/null && nvidia-smi -L
  "$PY" -c 'import sys, torch; print("python", sys.version.split()[0], "| torch", torch.__version__,
            "| CUDA", torch.version.cuda, "| available:", torch.cuda.is_available())' || true
  "$PY" tools/gpu_parts.py stage "$WH" "$STAGE_DIR"
  exit $?
fi

# ---------------------------------------------------------------- the wheelhouse
unset ATTN_COURSE_TRAINING_CACHE PYTEST_ADDOPTS PYTEST_XDIST_WORKER PYTEST_XDIST_WORKER_COUNT PYTHONPATH
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
manifest_for_gpu() { "$PY" -c 'import json, sys; sys.exit(0 if json.load(open(sys.argv[1]))["for_gpu_machine"] else 1)' "$1/wheels/manifest.json"; }
if [ $MODE = dry ] && [ ! -f "$WH/wheels/manifest.json" ]; then
  [ $WH_GIVEN = 1 ] || WH=$WORK/wheelhouse
  step "no wheelhouse from PyPI here: repack .venv's installed packages into $WH (offline)"
  "$PY" tools/gpu_wheelhouse.py build --from-env --out "$WH" || die "could not build $WH"
fi
[ -f "$WH/wheels/manifest.json" ] || die "no wheelhouse at $WH: run \`make gpu-wheelhouse\` on a machine with PyPI and send $WH/wheels"
if [ $MODE = gpu ] && ! manifest_for_gpu "$WH"; then
  die "$WH was repacked from a CPU machine's packages (for --dry only): build it with \`make gpu-wheelhouse\`"
fi

# ---------------------------------------------------------------- 1. the virtual environment
step "$MODE check: $("$PY" -c 'import sys; print(sys.executable, sys.version.split()[0])'), ATTN_COURSE_DEVICE=$DEVICE, $JOBS workers"
if [ $MODE = gpu ]; then
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  "$PY" -c 'import torch, sys; ok = torch.cuda.is_available(); print("torch", torch.__version__, "CUDA", torch.version.cuda,
            torch.cuda.get_device_name(0) if ok else "NO CUDA DEVICE"); sys.exit(0 if ok else 1)' \
    || die "torch.cuda.is_available() is False for $PY: this is no GPU machine (use --dry to rehearse on a CPU)"
  SITE=$("$PY" -c 'import sys; print("\n".join(p for p in sys.path if p.endswith(("site-packages", "dist-packages"))))')
else
  step "stand-in for the GPU machine's site-packages: .venv's copies of tools/gpu_system_packages.txt"
  "$PY" tools/gpu_env.py system-site tools/gpu_system_packages.txt "$WORK/system-site" \
      --leave-out "$WH/wheels/requirements.txt" || die "system-site failed"
  SITE=$WORK/system-site
  "$PY" tools/gpu_parts.py stage "$WH" "$STAGE_DIR" >/dev/null || die "no MiniLM part in $WH"
fi

step "join the MiniLM wheel from its parts"
rm -rf "$WORK/minilm"
"$PY" tools/gpu_parts.py join "$WH" "$STAGE_DIR" "$WORK/minilm" || exit 1
MINILM=$(ls "$WORK"/minilm/*.whl)

VENV=$WORK/venv
VPY=$VENV/bin/python
STAMP_TEXT=$(cat "$WH/wheels/requirements.txt" "$WH"/minilm-*/minilm.json 2>/dev/null; echo "$SITE"; "$PY" -V)
if [ -x "$VPY" ] && [ "$(cat "$VENV/.gpu-check-stamp" 2>/dev/null)" = "$STAMP_TEXT" ]; then
  step "virtual environment $VENV is up to date: kept"
else
  step "virtual environment $VENV: $("$PY" -V) + $(wc -l <"$WH/wheels/requirements.txt") wheels + MiniLM + this checkout, offline"
  rm -rf "$VENV"
  "$PY" -m venv --without-pip "$VENV" || die "python -m venv failed"
  PURELIB=$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  printf '%s\n' "$SITE" | while read -r dir; do
    [ -n "$dir" ] && printf 'import site; site.addsitedir(%s)\n' "$("$PY" -c 'import sys; print(repr(sys.argv[1]))' "$dir")"
  done >"$PURELIB/00-gpu-check-system-site.pth"
  FIND_LOCAL=()
  [ -d "$WH/local" ] && FIND_LOCAL=(--find-links "$WH/local")
  quiet() { "$@" >"$WORK/pip.log" 2>&1 || { cat "$WORK/pip.log"; return 1; }; }   # pip's output on failure only
  quiet "$VPY" -m pip install --no-index --no-deps --no-compile --find-links "$WH/wheels" "${FIND_LOCAL[@]}" \
      -r "$WH/wheels/requirements.txt" "$MINILM" || die "pip install from $WH failed"
  if ! quiet "$VPY" -m pip install --no-index --no-deps --no-build-isolation -e "$ROOT"; then
    echo "gpu_check: pip install -e . failed (above; setuptools>=64 is needed): the checkout goes on sys.path instead"
    echo "$ROOT" >"$PURELIB/attn_course_checkout.pth"
  fi
  echo "$STAMP_TEXT" >"$VENV/.gpu-check-stamp"
fi
THREADS_PER_WORKER=$(( $(nproc) / JOBS )); [ "$THREADS_PER_WORKER" -ge 1 ] || THREADS_PER_WORKER=1
export OMP_NUM_THREADS=$THREADS_PER_WORKER MKL_NUM_THREADS=$THREADS_PER_WORKER
{
  echo "# $MODE check, $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null)$(git status --porcelain 2>/dev/null | grep -q . && echo ' with local changes')"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  "$VPY" -c 'import platform, sys, torch; print("python", sys.version.split()[0], "|", platform.platform(), "| torch", torch.__version__,
             "| CUDA", torch.version.cuda, "|", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device")'
  echo "cores: $(nproc); pytest-xdist workers: $JOBS; threads per worker: $THREADS_PER_WORKER"
  echo "## pip check"; "$VPY" -m pip check 2>&1 | head -40
  echo "## pip freeze (the virtual environment and the system site-packages it sees)"; "$VPY" -m pip freeze 2>/dev/null
} >"$OUT/environment.txt" 2>&1
head -3 "$OUT/environment.txt" | tail -2

step "verify: every module the check imports, and the MiniLM weights"
if [ $MODE = dry ]; then   # and, beside it, the CUDA test cases collected: on a GPU they run, here they are skipped
  "$VPY" -m pytest -p no:cacheprovider -q -n 0 --collect-only -k cuda tests --ignore=tests/test_browser.py \
      --ignore=tests/test_browser_widgets.py >"$WORK/collect.log" 2>&1 &
  COLLECT=$!
fi
"$VPY" tools/gpu_env.py verify || { echo "gpu_check: the environment is incomplete (see above)"; exit 1; }
if [ $MODE = dry ]; then
  wait $COLLECT || { cat "$WORK/collect.log"; echo "gpu_check: collecting the tests failed"; exit 1; }
  echo "CUDA test cases: $(tail -1 "$WORK/collect.log")"
fi

# ---------------------------------------------------------------- 2-4. the tests
PHASES=() LAST_WALL=0
run_phase() {  # label device max-seconds pytest-args...: stopped at max-seconds or 20 s before --budget
  local label=$1 device=$2 left=$((BUDGET - 20 - (SECONDS - START))) t0=$SECONDS
  [ "$3" -ge "$left" ] || left=$3
  shift 3
  if [ $left -le 15 ]; then
    echo "gpu_check: no time left for phase $label (--budget $BUDGET)"; PHASES+=(--phase "$label=$OUT/junit-$label.xml"); return
  fi
  step "phase $label: ATTN_COURSE_DEVICE=$device pytest $* (stopped after ${left}s)"
  rm -f "$OUT/junit-$label.xml"
  ATTN_COURSE_DEVICE=$device timeout -s INT -k 20 "$left" "$VPY" -m pytest -p no:cacheprovider -q -n "$JOBS" \
      --dist loadscope --junitxml="$OUT/junit-$label.xml" -o junit_family=xunit1 --durations=5 "$@"
  echo "phase $label: pytest exit status $?, $((SECONDS - t0)) s"
  PHASES+=(--phase "$label=$OUT/junit-$label.xml:$((SECONDS - t0))")
  LAST_WALL=$((SECONDS - t0))
}
REPORT_ARGS=()
if [ $MODE = dry ]; then
  run_phase unit cpu "$BUDGET" tests/test_device_data.py
  run_phase cpu cpu "$BUDGET" solutions/01_input_representation.ipynb
else
  run_phase unit cuda $((BUDGET / 3)) tests --ignore=tests/test_browser.py --ignore=tests/test_browser_widgets.py -m "not browser and not grading_run and not gpu_dry"
  run_phase gpu cuda "$BUDGET" solutions lessons
  if [ $CPU = 0 ]; then
    echo "phase cpu: skipped (--no-cpu)"
  elif [ $((SECONDS - START + LAST_WALL * 3 / 2)) -gt $((BUDGET - 20)) ]; then
    echo "phase cpu: skipped, it would end after --budget $BUDGET s (the GPU notebooks took $LAST_WALL s)"
  else
    run_phase cpu cpu "$BUDGET" solutions lessons
  fi
  REPORT_ARGS=(--require-cuda)
fi

step "report"
"$VPY" tools/gpu_report.py "$OUT" "${PHASES[@]}" "${REPORT_ARGS[@]}"
rc=$?
step "done in $((SECONDS - START)) s: $OUT (exit status $rc)"
exit $rc
