# bench/lib.sh: helpers of bench/run, sourced by it.
#
# Everything here runs under a private folder ($B, mode 0755, owned by
# postgres) under /tmp: a PostgreSQL cluster on its own port and socket
# folder, an nginx sink with its own prefix on 127.0.0.1, their logs.  Every
# process started is remembered by PID and stopped by bench_cleanup (an EXIT
# trap in bench/run); nothing is ever stopped by name.

PGBIN=${PGBIN:-$(pg_config --bindir)}
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

say() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { say "error: $*"; exit 1; }

# A TCP port nobody listens on (and that nobody took in the last moment).
free_port() {
	local p
	for _ in $(seq 1 200); do
		p=$((20000 + RANDOM % 30000))
		if ! ss -Htln "sport = :$p" | grep -q .; then
			echo "$p"
			return 0
		fi
	done
	return 1
}

# psql as postgres into the bench database; -X: no ~/.psqlrc.
q() { runuser -u postgres -- "$PGBIN/psql" -X -q -A -t -v ON_ERROR_STOP=1 \
	-h "$B" -p "$PGPORT" -d bench "$@"; }
qpg() { runuser -u postgres -- "$PGBIN/psql" -X -q -A -t -v ON_ERROR_STOP=1 \
	-h "$B" -p "$PGPORT" -d postgres "$@"; }

# Epoch seconds with microseconds (bash 5).
now_s() { echo "$EPOCHREALTIME"; }

bench_make_dir() {
	B=$(mktemp -d /tmp/delq-bench.XXXXXX)
	chmod 0755 "$B"
	chown postgres: "$B"
	mkdir -p "$B/nginx/logs" "$B/nginx/tmp"
	chown -R postgres: "$B/nginx"
	export B
}

# initdb and start; settings from the BENCH_* parameters of bench/run.
cluster_start() {
	PGPORT=$(free_port) || die "no free port"
	export PGPORT
	runuser -u postgres -- "$PGBIN/initdb" -D "$B/data" -A trust -E UTF8 \
		--locale=C.UTF-8 >"$B/initdb.log" 2>&1 || die "initdb failed: $(tail -5 "$B/initdb.log")"
	local preload=delq
	[ "$PROFILE" = 1 ] && preload="delq,pg_stat_statements"
	cat >>"$B/data/postgresql.conf" <<EOF
# delq bench
port = $PGPORT
listen_addresses = ''
unix_socket_directories = '$B'
max_connections = 60
shared_buffers = ${SHARED_BUFFERS}
max_wal_size = 8GB
checkpoint_timeout = 30min
synchronous_commit = on
shared_preload_libraries = '$preload'
delq.database = 'bench'
delq.batch_size = $BATCH_SIZE
delq.max_in_flight = $MAX_IN_FLIGHT
delq.idle_timeout = ${IDLE_TIMEOUT}
pg_stat_statements.track = 'all'
pg_stat_statements.max = 2000
track_functions = 'all'
log_line_prefix = '%m [%p] %b '
log_min_messages = warning
log_min_error_statement = error
${EXTRA_CONF:-}
EOF
	[ "$PROFILE" = 1 ] || sed -i '/^pg_stat_statements/d; /^track_functions/d' "$B/data/postgresql.conf"
	# the server's open-file limit: one socket per transfer in flight, plus
	# the keep-alive connections curl holds for reuse
	# (raised here, as root: the postgres user may not raise its hard limit)
	( ulimit -n "$NOFILE" && exec runuser -u postgres -- "$PGBIN/postgres" -D "$B/data" ) \
		>"$B/postgres.log" 2>&1 &
	RUNUSER_PID=$!
	for _ in $(seq 1 100); do
		runuser -u postgres -- "$PGBIN/pg_isready" -q -h "$B" -p "$PGPORT" && break
		kill -0 "$RUNUSER_PID" 2>/dev/null || break
		sleep 0.1
	done
	runuser -u postgres -- "$PGBIN/pg_isready" -q -h "$B" -p "$PGPORT" ||
		die "postgres did not start: $(tail -5 "$B/postgres.log")"
	PG_PID=$(head -1 "$B/data/postmaster.pid")
	qpg -c "CREATE DATABASE bench"
	q -c "CREATE EXTENSION delq CASCADE" -c "CREATE EXTENSION IF NOT EXISTS pgcrypto" 2>/dev/null ||
		q -c "CREATE EXTENSION IF NOT EXISTS delq CASCADE"
	[ "$PROFILE" = 1 ] && q -c "CREATE EXTENSION pg_stat_statements"
	q -f "$BENCH_DIR/setup.sql" >/dev/null
	say "postgres $PG_PID on port $PGPORT, socket $B"
}

# PID of this cluster's 'delq worker' (a child of our postmaster).
worker_pid() {
	local pid
	for _ in $(seq 1 100); do
		pid=$(q -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'delq worker'")
		[ -n "$pid" ] && { echo "$pid"; return 0; }
		sleep 0.1
	done
	return 1
}

# The sink: nginx on 127.0.0.1, answering 200 '{"ok":true}' to any POST
# (return discards the request body and keeps the connection), with an
# access log only under /log/ ($msec and the webhook-id header, for
# latency), a 503 under /down/, and stub_status for connection counts.
nginx_start() {
	NGINX_PORT=$(free_port) || die "no free port"
	DOWN_PORT=$(free_port) || die "no free port"	# nobody listens: refused
	export NGINX_PORT DOWN_PORT
	cat >"$B/nginx/nginx.conf" <<EOF
daemon off;
master_process on;
worker_processes $NGINX_WORKERS;
worker_rlimit_nofile $NOFILE;
pid $B/nginx/nginx.pid;
error_log $B/nginx/logs/error.log warn;
events { worker_connections 8192; multi_accept on; }
http {
    access_log off;
    client_body_temp_path $B/nginx/tmp/body;
    proxy_temp_path $B/nginx/tmp/proxy;
    fastcgi_temp_path $B/nginx/tmp/fastcgi;
    uwsgi_temp_path $B/nginx/tmp/uwsgi;
    scgi_temp_path $B/nginx/tmp/scgi;
    keepalive_timeout 120s;
    keepalive_requests 1000000;
    client_body_buffer_size 64k;
    log_format wire '\$msec \$http_webhook_id \$status \$connection \$connection_requests';
    server {
        listen 127.0.0.1:$NGINX_PORT reuseport backlog=4096;
        default_type application/json;
        location / { return 200 '{"ok":true}'; }
        location /log/ { access_log $B/nginx/logs/wire.log wire buffer=256k flush=1s; return 200 '{"ok":true}'; }
        location /down/ { return 503 '{"ok":false}'; }
        location = /status { stub_status; }
    }
}
EOF
	( ulimit -n "$NOFILE" && exec /usr/sbin/nginx -p "$B/nginx" -c "$B/nginx/nginx.conf" ) >"$B/nginx/logs/stdout.log" 2>&1 &
	NGINX_PID=$!
	echo "$NGINX_PID" >"$B/nginx.pid.master"
	for _ in $(seq 1 50); do
		curl -s -o /dev/null "http://127.0.0.1:$NGINX_PORT/status" && break
		sleep 0.1
	done
	curl -sf -o /dev/null "http://127.0.0.1:$NGINX_PORT/status" || die "nginx did not start: $(cat "$B/nginx/logs/error.log")"
	# two POSTs with bodies on one connection: both 200, one connection
	local out
	out=$(curl -s -o /dev/null -w '%{http_code} %{num_connects}\n' \
		-H 'Content-Type: application/json' --data '{"a":1}' "http://127.0.0.1:$NGINX_PORT/" \
		--next -s -o /dev/null -w '%{http_code} %{num_connects}\n' -H 'Content-Type: application/json' --data '{"b":2}' "http://127.0.0.1:$NGINX_PORT/" | tr '\n' ' ')
	[ "$out" = "200 1 200 0 " ] || die "nginx sink does not keep POST connections alive: '$out'"
	say "nginx $NGINX_PID on 127.0.0.1:$NGINX_PORT (POST + keep-alive checked)"
}

# stub_status: "accepts handled requests" as three numbers.
nginx_counts() {
	curl -s "http://127.0.0.1:$NGINX_PORT/status" | awk 'NR == 3 { print $1, $2, $3 }'
}

# wrk's POST script: the body and the headers delq sends.
wrk_script() {
	local body_file=$1 out=$2
	cat >"$out" <<EOF
local f = io.open("$body_file", "r")
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
wrk.headers["User-Agent"] = "delq/1.0"
wrk.headers["webhook-id"] = "msg_0123456789abcdef0123456789abcdef"
wrk.headers["Idempotency-Key"] = "msg_0123456789abcdef0123456789abcdef"
wrk.headers["webhook-timestamp"] = "1700000000"
wrk.headers["webhook-signature"] = "v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4="
EOF
}

# wrk requests/s: wrk_rps connections seconds [extra wrk args]
wrk_rps() {
	local c=$1 d=$2
	shift 2
	timeout $((d + 30)) wrk -t "$WRK_THREADS" -c "$c" -d "${d}s" -s "$B/post.lua" "$@" \
		"http://127.0.0.1:$NGINX_PORT/" >"$B/wrk.out" 2>&1
	cat "$B/wrk.out" >>"$B/wrk.all"
	awk '/^Requests\/sec:/ { print $2 }' "$B/wrk.out"
}

# Process stats of a PID: "rss_kb anon_kb file_kb shmem_kb"
proc_mem() {
	awk '/^VmRSS:/ { r = $2 } /^RssAnon:/ { a = $2 } /^RssFile:/ { f = $2 }
	     /^RssShmem:/ { s = $2 } END { print r, a, f, s }' "/proc/$1/status"
}

# utime + stime of a PID, in clock ticks.
proc_ticks() {
	awk '{ print $14 + $15 }' "/proc/$1/stat"
}

bench_cleanup() {
	local rc=$?
	set +e
	for pid in $WRK_PIDS $PGBENCH_PIDS; do kill "$pid" 2>/dev/null; done
	if [ -n "$NGINX_PID" ] && kill -0 "$NGINX_PID" 2>/dev/null; then
		kill -QUIT "$NGINX_PID" 2>/dev/null
		for _ in $(seq 1 50); do kill -0 "$NGINX_PID" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$NGINX_PID" 2>/dev/null
	fi
	if [ -n "$PG_PID" ] && kill -0 "$PG_PID" 2>/dev/null; then
		kill -INT "$PG_PID" 2>/dev/null	# fast shutdown
		for _ in $(seq 1 100); do kill -0 "$PG_PID" 2>/dev/null || break; sleep 0.1; done
		kill -QUIT "$PG_PID" 2>/dev/null
	fi
	[ -n "${RUNUSER_PID:-}" ] && kill "$RUNUSER_PID" 2>/dev/null
	wait 2>/dev/null
	if [ -n "$B" ] && [ -d "$B" ] && [ "$KEEP_DIR" != 1 ]; then
		rm -rf "$B"
	elif [ -n "$B" ]; then
		say "kept $B"
	fi
	exit $rc
}
