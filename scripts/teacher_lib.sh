# Shell helpers shared by the demo and the bench scripts. Source it, then:
#   start_teacher_server BIN OUT_DIR ARGS...   starts `BIN serve ARGS...` on a free
#       loopback port, logs to OUT_DIR/server.log, waits until it serves, and sets
#       TEACHER_PID and TEACHER_PORT; an EXIT trap stops the server.
#   stop_teacher_server                          SIGTERM (graceful drain) and wait.

start_teacher_server() {
  local bin=$1 out=$2
  shift 2
  rm -f "$out/port"
  "$bin" serve --address=127.0.0.1:0 --port_file="$out/port" "$@" >"$out/server.log" 2>&1 &
  TEACHER_PID=$!
  trap 'kill $TEACHER_PID 2>/dev/null || true' EXIT
  for _ in $(seq 1 3000); do  # up to 5 min: a transfer set of an ensemble takes a while
    [ -s "$out/port" ] && break
    kill -0 "$TEACHER_PID" 2>/dev/null || break
    sleep 0.1
  done
  if [ ! -s "$out/port" ]; then
    echo "the teacher server did not start:" >&2
    cat "$out/server.log" >&2
    return 1
  fi
  TEACHER_PORT=$(cat "$out/port")
}

stop_teacher_server() {
  kill -TERM "$TEACHER_PID" 2>/dev/null || true
  wait "$TEACHER_PID" 2>/dev/null || true
}
