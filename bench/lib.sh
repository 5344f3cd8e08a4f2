# Helpers shared by bench/http.sh and bench/rewrap.sh (sourced, not run). They expect the
# sourcing script to define say (log to stderr), and use its PG_ADMIN_URL and SERVER_PID.

# A free TCP port on 127.0.0.1 (nothing answers a connect there), or status 1 after 100 tries.
free_port() {
  local p
  for _ in $(seq 1 100); do
    p=$((20000 + RANDOM % 30000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return 0; fi
  done
  return 1
}

# Stops the server $SERVER_PID (SIGTERM, then SIGKILL after 5 s) and clears SERVER_PID.
stop_server() {
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  SERVER_PID=""
}

# Starts the local PostgreSQL cluster if $PG_ADMIN_URL does not answer.
pg_up() {
  if ! timeout 5 psql "$PG_ADMIN_URL" -qXAtc 'select 1' >/dev/null 2>&1; then
    say "PostgreSQL is down: starting the local cluster"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -n 1)" main start
    for _ in $(seq 1 60); do timeout 5 psql "$PG_ADMIN_URL" -qXAtc 'select 1' >/dev/null 2>&1 && break; sleep 0.5; done
  fi
}

# "busy all" CPU ticks of the whole machine from /proc/stat.
machine_ticks() { awk '/^cpu /{busy=$2+$3+$4+$7+$8+$9; print busy, busy+$5+$6; exit}' /proc/stat; }

# field NAME LINE: the value of NAME=value in a "RESULT ..." or similar line.
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$2" | head -n 1; }

# wrk_errors RESULT_LINE: the sum of wrk's connect, read, write and timeout socket errors.
wrk_errors() {
  echo $(( $(field err_connect "$1") + $(field err_read "$1") + $(field err_write "$1") + $(field err_timeout "$1") ))
}
