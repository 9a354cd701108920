#!/usr/bin/env bash
# End-to-end test of deploy/docker-compose.yml on this machine's Docker Engine:
#  1. builds the images offline (no registry: debootstrap base, then docker build);
#  2. brings up two teacher replicas, Prometheus and two students on MNIST
#     (bind-mounted read-only), the teacher trained small and fast;
#  3. asserts that Prometheus scrapes both teacher replicas (target health "up",
#     through its HTTP API) and that both replicas served the students;
#  4. kills one teacher replica (docker kill) while both students are running,
#     and asserts they are still running; then kills one student mid-run
#     (docker rm -f) and recreates it (a new container, another hostname),
#     which must take over the orphaned shard and resume its checkpoint;
#     asserts both finish on the surviving replica, exit 0 and log their test
#     error counts, with checkpoints and metrics CSVs in the state volume, and
#     that the resumed student's final weights equal those of an uninterrupted
#     reference run of the same shard (a third student, run alongside with its
#     own state directory);
#  5. tears everything down and asserts no container, network or volume of the
#     run is left (also when a step fails: EXIT trap).
# Any failing step fails the test. Usage: deploy/compose_test.sh
# Env: DISTILLERY_TEST_DATA_DIR (default ../shared/data/mnist from the checkout).
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS
log() { echo "compose_test [$((SECONDS - started)) s]: $*"; }
fail() {
  echo "compose_test: FAIL: $*" >&2
  exit 1
}

data=${DISTILLERY_TEST_DATA_DIR:-../shared/data/mnist}
[ -s "$data/train-images-idx3-ubyte.gz" ] || fail "no MNIST-format data in $data"
export DISTILLERY_DATA_DIR
DISTILLERY_DATA_DIR=$(realpath "$data")

project=distillery-test-$$
files=(-f deploy/docker-compose.yml -f deploy/docker-compose.data.yml)
compose() { docker-compose -p "$project" "${files[@]}" "$@"; }
work=$(mktemp -d)

leftovers() {
  local label=label=com.docker.compose.project=$project
  {
    docker ps -aq --filter "$label" | sed 's/^/container /'
    docker network ls -q --filter "$label" | sed 's/^/network /'
    docker volume ls -q --filter "$label" | sed 's/^/volume /'
  } | tr '\n' ' '
}
reference=$project-reference
cleanup() {
  local status=$?
  set +e
  docker rm -f "$reference" >/dev/null 2>&1
  if [ "$status" -ne 0 ] && [ -n "$(docker ps -aq --filter "label=com.docker.compose.project=$project")" ]; then
    echo "--- docker-compose ps and the last log lines, for the failure above:" >&2
    compose ps >&2
    compose logs --no-color --tail=40 >&2
  fi
  compose down --volumes --remove-orphans --timeout 5 >"$work/down.log" 2>&1 || cat "$work/down.log" >&2
  left=$(leftovers)
  if [ -n "$left" ]; then
    echo "compose_test: FAIL: left behind after docker-compose down: $left" >&2
    status=1
  fi
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT

# 1. Images.
log "building images (deploy/build_images.sh; log in the output on failure)"
deploy/build_images.sh >"$work/build.log" 2>&1 || {
  tail -60 "$work/build.log" >&2
  fail "the image build failed"
}
grep -E '^build_(base_image|images):' "$work/build.log" || true

# 2. Up: a small teacher (seconds to train), students that run long enough to
# lose a teacher replica midway. One compute thread per process.
export TEACHER_TRAIN_ARGS="--train_range=0:20000 --architecture=784-256-10 --input_dropout=0 --hidden_dropout=0 --jitter=0 --epochs=2 --threads=1"
export TEACHER_SERVE_ARGS="--address=0.0.0.0:50051 --metrics_address=0.0.0.0:9464 --transfer_range=50000:60000 --drain_seconds=5 --max_connection_age_seconds=20 --threads=1"
export STUDENT_NUM_SHARDS=2
export STUDENT_ARGS="--distill_temperature=4 --epochs=${DISTILLERY_TEST_STUDENT_EPOCHS:-150} --eval_every=25 --threads=1 --call_deadline_seconds=10 --give_up_seconds=120"
export TEACHER_START_PERIOD=300s DISTILLERY_RESTART=no
DISTILLERY_PROMETHEUS_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export DISTILLERY_PROMETHEUS_PORT
log "docker-compose -p $project up -d --scale teacher=2 --scale student=2 (waits for healthy teachers)"
compose up -d --scale teacher=2 --scale student=2 >"$work/up.log" 2>&1 || {
  cat "$work/up.log" >&2
  fail "docker-compose up failed"
}
mapfile -t teachers < <(compose ps -q teacher)
mapfile -t students < <(compose ps -q student)
[ "${#teachers[@]}" -eq 2 ] || fail "expected 2 teacher containers, got ${#teachers[@]}"
[ "${#students[@]}" -eq 2 ] || fail "expected 2 student containers, got ${#students[@]}"
for t in "${teachers[@]}"; do
  health=$(docker inspect --format '{{.State.Health.Status}}' "$t")
  [ "$health" = healthy ] || fail "teacher $t is $health"
done
log "both teachers healthy, students started"

# The uninterrupted reference of the shard whose student will be killed: the
# same student on the same teachers, in its own state directory.
victim_student=${students[0]}
victim_shard=""
for _ in $(seq 1 60); do
  victim_shard=$(docker logs "$victim_student" 2>&1 | grep -o 'takes shard [0-9]*' | head -1 | awk '{print $3}')
  [ -n "$victim_shard" ] && break
  sleep 1
done
[ -n "$victim_shard" ] || fail "student $victim_student logged no shard"
network=$(docker inspect --format '{{range $k, $v := .NetworkSettings.Networks}}{{$k}}{{end}}' "$victim_student")
docker run -d --init --name "$reference" --network "$network" \
  -v "${project}_state:/state" -v "$DISTILLERY_DATA_DIR:/data:ro" \
  -e DISTILLERY_DATA_DIR=/data -e DISTILLERY_STATE_DIR=/state/reference \
  -e DISTILLERY_TEACHER=dns:///teacher:50051 -e STUDENT_NUM_SHARDS="$STUDENT_NUM_SHARDS" \
  -e STUDENT_SHARD_INDEX="$victim_shard" -e STUDENT_ARGS="$STUDENT_ARGS" \
  -e OMP_NUM_THREADS=1 -e OMP_WAIT_POLICY=PASSIVE \
  "${DISTILLERY_IMAGE:-distillery/runtime}" distillery-student >/dev/null ||
  fail "cannot start the reference student"
log "reference student of shard $victim_shard started"

# 3. Prometheus: both teacher replicas are targets, and up.
api=http://127.0.0.1:$DISTILLERY_PROMETHEUS_PORT/api/v1
prom() { curl -fsS --max-time 5 "$api/$1" 2>/dev/null; }
teacher_targets_up() {
  prom targets | python3 -c '
import json, sys
targets = [t for t in json.load(sys.stdin)["data"]["activeTargets"] if t["labels"]["job"] == "teacher"]
print(" ".join("%s=%s" % (t["labels"]["instance"], t["health"]) for t in targets))
sys.exit(0 if len(targets) == int(sys.argv[1]) and all(t["health"] == "up" for t in targets) else 1)' "$1"
}
ok=""
for _ in $(seq 1 60); do
  if targets=$(teacher_targets_up 2); then ok=1; break; fi
  sleep 1
done
[ -n "$ok" ] || fail "Prometheus does not have both teacher targets up: ${targets:-no answer from $api}"
log "Prometheus targets of job teacher: $targets"

# Both students training (an epoch logged), and both replicas served them
# (round_robin over the name's A records), as Prometheus scraped it.
for s in "${students[@]}"; do
  for _ in $(seq 1 120); do
    docker logs "$s" 2>&1 | grep 'epoch  *[0-9]*/' >/dev/null && break
    [ "$(docker inspect --format '{{.State.Running}}' "$s")" = true ] || break
    sleep 1
  done
  docker logs "$s" 2>&1 | grep 'epoch  *[0-9]*/' >/dev/null || fail "student $s logged no epoch"
done
served_by_both() {
  prom 'query?query=sum%20by%20(instance)%20(distill_examples_total)' | python3 -c '
import json, sys
result = json.load(sys.stdin)["data"]["result"]
print(" ".join("%s=%s" % (r["metric"]["instance"], r["value"][1]) for r in result))
sys.exit(0 if len(result) == 2 and all(float(r["value"][1]) > 0 for r in result) else 1)'
}
# Examples served by one replica (its instance label) as last scraped.
served_by() {
  prom "query?query=sum(distill_examples_total%7Binstance=%22$1%22%7D)" | python3 -c '
import json, sys
result = json.load(sys.stdin)["data"]["result"]
print(int(float(result[0]["value"][1])) if result else 0)'
}
ok=""
for _ in $(seq 1 30); do
  if served=$(served_by_both); then ok=1; break; fi
  sleep 1
done
[ -n "$ok" ] || fail "not both teacher replicas served examples: ${served:-no answer}"
log "examples served per replica (Prometheus): $served"

# 4. Kill one teacher replica while both students are in the middle of training.
victim=${teachers[1]}
survivor=${teachers[0]}
survivor_instance=$(docker inspect --format '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$survivor"):9464
for s in "${students[@]}"; do
  [ "$(docker inspect --format '{{.State.Running}}' "$s")" = true ] ||
    fail "student $s finished before the teacher kill: raise DISTILLERY_TEST_STUDENT_EPOCHS"
done
survivor_before=$(served_by "$survivor_instance")
log "docker kill $(docker inspect --format '{{.Name}}' "$victim") (the other replica, $survivor_instance, has served $survivor_before examples)"
docker kill "$victim" >/dev/null
sleep 2
for s in "${students[@]}"; do
  [ "$(docker inspect --format '{{.State.Running}}' "$s")" = true ] ||
    fail "student $s stopped right after the teacher kill"
  docker logs "$s" 2>&1 | grep 'epoch  *[0-9]*/' | tail -1 | sed "s/^/  student ${s:0:12} at kill+2s: /"
done

# Kill one student mid-run and recreate it: a new container under another
# hostname, which must claim the orphaned shard and resume its checkpoint.
[ "$(docker inspect --format '{{.State.Running}}' "$victim_student")" = true ] ||
  fail "student $victim_student finished before its kill: raise DISTILLERY_TEST_STUDENT_EPOCHS"
docker logs "$victim_student" 2>&1 | grep 'epoch  *[0-9]*/' | tail -1 | sed "s/^/  student ${victim_student:0:12} before its kill: /"
log "docker rm -f student ${victim_student:0:12} (shard $victim_shard), then docker-compose up --scale student=2 again"
docker rm -f "$victim_student" >/dev/null
compose up -d --no-deps --no-recreate --scale student=2 student >"$work/up2.log" 2>&1 || {
  cat "$work/up2.log" >&2
  fail "recreating the student failed"
}
mapfile -t students < <(compose ps -q student)
[ "${#students[@]}" -eq 2 ] || fail "expected 2 student containers after the recreation, got ${#students[@]}"
for s in "${students[@]}"; do
  [ "$s" = "$victim_student" ] && fail "the killed student $s is still there"
done

log "waiting for the students to finish"
for s in "${students[@]}"; do
  code=$(timeout 900 docker wait "$s") || fail "student $s did not finish in 15 minutes"
  docker logs "$s" >"$work/student-$s.log" 2>&1
  [ "$code" -eq 0 ] || {
    tail -30 "$work/student-$s.log" >&2
    fail "student $s exited with $code"
  }
  line=$(grep -E 'distilled student .* done: [0-9]+ test errors out of [0-9]+' "$work/student-$s.log") ||
    fail "student $s logged no test error count"
  log "student ${s:0:12}: ${line#*\] }"
  grep -E 'takes shard' "$work/student-$s.log" | sed 's/^/  /'
done
# The recreated student took over the orphaned shard and resumed it, and its
# final weights are the uninterrupted reference's.
code=$(timeout 900 docker wait "$reference") || fail "the reference student did not finish"
[ "$code" -eq 0 ] || {
  docker logs "$reference" 2>&1 | tail -30 >&2
  fail "the reference student exited with $code"
}
docker run --rm -v "${project}_state:/state:ro" "${DISTILLERY_IMAGE:-distillery/runtime}" \
  cat "/state/students/shard-$victim_shard/student.log" >"$work/victim-shard.log"
grep -q 'resuming from' "$work/victim-shard.log" || fail "shard $victim_shard was not resumed after its student's kill"
resumed=$(grep -o 'final weights [0-9a-f]*' "$work/victim-shard.log" | tail -1)
expected=$(docker logs "$reference" 2>&1 | grep -o 'final weights [0-9a-f]*' | tail -1)
[ -n "$resumed" ] && [ "$resumed" = "$expected" ] ||
  fail "shard $victim_shard: the resumed student ended with '${resumed:-no weights}', the uninterrupted one with '${expected:-no weights}'"
log "shard $victim_shard resumed after its student's kill: $resumed, as the uninterrupted reference"
docker rm -f "$reference" >/dev/null

# The shards are distinct, and each has a checkpoint and a metrics CSV.
shards=$(cat "$work"/student-*.log | grep -o 'takes shard [0-9]*' | sort -u | wc -l)
[ "$shards" -eq 2 ] || fail "the two students did not take two distinct shards"
docker run --rm -v "${project}_state:/state:ro" "${DISTILLERY_IMAGE:-distillery/runtime}" \
  bash -c 'for i in 0 1; do d=/state/students/shard-$i; [ -s $d/student.ckpt ] && [ -s $d/metrics.csv ] && [ -e $d/done ] || exit 1; echo "  $d: $(($(wc -l <$d/metrics.csv) - 1)) epochs in metrics.csv, $(stat -c %s $d/student.ckpt) bytes of checkpoint"; done' ||
  fail "missing student checkpoints or metrics in the state volume"
# The surviving replica is still healthy, served the students after the
# kill, and is Prometheus's one teacher target left, up.
[ "$(docker inspect --format '{{.State.Health.Status}}' "$survivor")" = healthy ] ||
  fail "the surviving teacher is not healthy"
ok=""
for _ in $(seq 1 30); do
  targets=$(teacher_targets_up 1) && survivor_after=$(served_by "$survivor_instance") &&
    [ "$survivor_after" -gt "$survivor_before" ] && { ok=1; break; }
  sleep 1
done
[ -n "$ok" ] || fail "after the kill: targets ${targets:-?}, the survivor served ${survivor_after:-?} (before: $survivor_before)"
log "after the kill: Prometheus targets $targets; the survivor served $((survivor_after - survivor_before)) more examples"

# 5. Down (the EXIT trap also checks that nothing is left).
log "docker-compose down"
trap - EXIT
compose down --volumes --remove-orphans --timeout 15 >"$work/down.log" 2>&1 || {
  cat "$work/down.log" >&2
  rm -rf "$work"
  fail "docker-compose down failed"
}
rm -rf "$work"
left=$(leftovers)
[ -z "$left" ] || fail "left behind after docker-compose down: $left"
log "PASS"
