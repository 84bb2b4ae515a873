#!/usr/bin/env bash
# The GPU gate of a CI job: two steps in the same image (the same digest, once pushed).
#   0. with PTCUDA_PUSH=REGISTRY/REPO:TAG: `jupyter ptcuda image push` the image under that tag; the
#      steps below then use the pushed digest (REPO@sha256:...), which is what every later runner pulls.
#   1. `jupyter ptcuda health --image IMAGE --junit FILE`: is the image healthy on this runner's GPUs?
#      Exit 1 when a check fails; FILE lists every check as JUnit XML for the CI system's test report.
#   2. `jupyter ptcuda run NOTEBOOK --image IMAGE --wait`: the notebook as a headless job, exported to a
#      plain train.py and run in a container of IMAGE; the step's exit status is the notebook's.
# github-actions.yml and gitlab-ci.yml (next to this file) call this script; so does
# tests/integration/test_ci_examples.py in every scripts/test run (.ci/run), so the examples cannot rot.
#
# Usage: gate.sh [IMAGE [NOTEBOOK]]          arguments win over the variables:
#   PTCUDA_IMAGE          image to gate (default: jupyter-ptcuda's default base image)
#   PTCUDA_NOTEBOOK       notebook to run (default: smoke.ipynb next to this script)
#   PTCUDA_GPUS           GPUs of both steps: all (default), none, a count, or '["0"]'
#   PTCUDA_JUNIT          the JUnit report (default: ptcuda-health.xml in the current folder)
#   PTCUDA_EXPECT_HEALTH  pass (default): a failed check stops the gate before the notebook runs.
#                         fail: the health check must find a failing check (a CPU-only image, as in
#                         this repository's own test) and the notebook runs anyway.
#   PTCUDA_JOB_TIMEOUT    seconds after which the notebook job is cancelled (default: none)
#   PTCUDA_PULL           1 (default): docker pull the image when it is not present; 0: never pull
#   PTCUDA_PUSH           REGISTRY/REPO:TAG: tag the image so, push it (credentials: `docker login
#                         REGISTRY` beforehand, in $DOCKER_CONFIG), and gate the pushed digest
#   PTCUDA_DIGEST_FILE    where to write the digest that was gated (default: none), for later CI steps
# Exit status: 0 when both steps did what was expected, else the status of the step that did not.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
image="${1:-${PTCUDA_IMAGE:-}}"
notebook="${2:-${PTCUDA_NOTEBOOK:-$here/smoke.ipynb}}"
gpus="${PTCUDA_GPUS:-all}"
junit="${PTCUDA_JUNIT:-ptcuda-health.xml}"
expect="${PTCUDA_EXPECT_HEALTH:-pass}"
say() { printf '\n=== gate: %s\n' "$*"; }
die() { printf 'gate.sh: %s\n' "$2" >&2; exit "$1"; }

case "$expect" in pass | fail) ;; *) die 2 "PTCUDA_EXPECT_HEALTH is '$expect': write pass or fail" ;; esac
command -v jupyter >/dev/null || die 2 "no 'jupyter' on PATH: pip install jupyter-ptcuda (in this job's Python)"
default_image() {  # jupyter-ptcuda's DEFAULT_BASE, read with the Python that runs `jupyter`
  local py
  py="$(head -n1 "$(command -v jupyter)" | sed -n 's/^#! *//p')"
  case "$py" in *python*) ;; *) py=python3 ;; esac
  $py -c 'from jupyter_ptcuda.images import DEFAULT_BASE; print(DEFAULT_BASE)'
}
if [ -z "$image" ]; then
  image="$(default_image)" || die 2 "cannot read jupyter-ptcuda's default image: set PTCUDA_IMAGE"
fi
if [ -n "${PTCUDA_PUSH:-}" ]; then
  say "pushing $image as $PTCUDA_PUSH"
  [ "$image" = "$PTCUDA_PUSH" ] || docker tag "$image" "$PTCUDA_PUSH"
  pushed=0
  image="$(jupyter ptcuda image push "$PTCUDA_PUSH")" || pushed=$?
  [ "$pushed" = 0 ] || die "$pushed" "could not push $PTCUDA_PUSH (exit $pushed): the reason and its fix are above"
  echo "gate.sh: gating the pushed digest $image"
fi
if [ -n "${PTCUDA_DIGEST_FILE:-}" ]; then
  printf '%s\n' "$image" >"$PTCUDA_DIGEST_FILE"
fi
if [ "${PTCUDA_PULL:-1}" = 1 ] && ! docker image inspect "$image" >/dev/null 2>&1; then
  say "pulling $image"
  docker pull "$image"
fi

say "health check of $image (gpus $gpus), JUnit report in $junit"
health=0
jupyter ptcuda health --image "$image" --gpus "$gpus" --junit "$junit" || health=$?
if [ "$expect" = pass ] && [ "$health" != 0 ]; then
  die "$health" "the health check of $image failed (exit $health): the failed checks and their fixes are above and in $junit"
fi
if [ "$expect" = fail ]; then
  [ "$health" != 0 ] || die 1 "expected the health check of $image to fail, but it passed"
  grep -q '<failure' "$junit" || die "$health" "the health check of $image did not run (exit $health, no failed check in $junit)"
  echo "gate.sh: the health check failed, as expected (PTCUDA_EXPECT_HEALTH=fail)"
fi

say "notebook $notebook as a job in $image (gpus $gpus)"
job=0
jupyter ptcuda run "$notebook" --image "$image" --gpus "$gpus" --wait ${PTCUDA_JOB_TIMEOUT:+--timeout "$PTCUDA_JOB_TIMEOUT"} || job=$?
[ "$job" = 0 ] || die "$job" "the notebook job failed (exit $job): its log is above and in the job's outputs/ folder"
say "passed: health ${expect}ed as expected, notebook job exit 0"
